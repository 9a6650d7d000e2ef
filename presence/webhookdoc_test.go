package presence

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDocumentWithWebhook(t *testing.T) {
	d := mustParseDocument(t, `{"rules": [{"match": "/a/.+", "config": {"public": true}}],
		"webhook": {"events": ["vacated", "entering_users"], "secret": "s3cr3t", "url": "https://app.example/presence-hook"}}`)
	want := &Webhook{URL: "https://app.example/presence-hook", Secret: "s3cr3t", Events: WebhookEnteringUsers | WebhookVacated}
	if *d.Webhook != *want {
		t.Fatalf("webhook %+v, want %+v", d.Webhook, want)
	}
	const canonical = `{"rules":[{"match":"/a/.+","config":{"public":true}}],` +
		`"webhook":{"url":"https://app.example/presence-hook","secret":"s3cr3t","events":["entering_users","vacated"]}}`
	if got := string(d.Bytes()); got != canonical {
		t.Fatalf("Bytes() = %s\nwant        %s", got, canonical)
	}
	if again := mustParseDocument(t, canonical); !sameDocument(d, again) || string(again.Bytes()) != canonical {
		t.Fatal("canonical bytes do not round-trip")
	}
	redacted := strings.Replace(canonical, `"secret":"s3cr3t"`, `"secret":"***"`, 1)
	if got := string(d.RedactedBytes()); got != redacted {
		t.Fatalf("RedactedBytes() = %s\nwant                %s", got, redacted)
	}

	// Without a list every event is delivered, and the list is written out.
	all := mustParseDocument(t, `{"webhook": {"url": "http://h/x", "secret": "k"}}`)
	if all.Webhook.Events != AllWebhookEvents {
		t.Fatalf("events %b, want all", all.Webhook.Events)
	}
	if got, want := string(all.Bytes()), `{"rules":[],"webhook":{"url":"http://h/x","secret":"k",`+
		`"events":["entering_users","leaving_user_ids","count_delta","occupied","vacated"]}}`; got != want {
		t.Fatalf("Bytes() = %s, want %s", got, want)
	}
	if d := mustParseDocument(t, `{"webhook": null}`); d.Webhook != nil {
		t.Fatal("a null webhook is no webhook")
	}
}

func TestParseWebhookErrors(t *testing.T) {
	doc := func(webhook string) string { return `{"rules": [], "webhook": ` + webhook + `}` }
	cases := []struct{ in, msg string }{
		{doc(`[]`), "webhook: must be a JSON object"},
		{doc(`{"secret": "k"}`), "webhook.url: required"},
		{doc(`{"url": "http://h/"}`), "webhook.secret: required"},
		{doc(`{"url": "http://h/", "secret": "k", "retries": 3}`), `webhook: unknown field "retries"`},
		{doc(`{"url": "http://h/", "secret": "k", "url": "http://h/"}`), `webhook: duplicate field "url"`},
		{doc(`{"url": "ftp://h/", "secret": "k"}`), "webhook.url: must be an absolute http or https URL"},
		{doc(`{"url": "/relative", "secret": "k"}`), "webhook.url: must be an absolute http or https URL"},
		{doc(`{"url": 1, "secret": "k"}`), "webhook.url: must be a string"},
		{doc(`{"url": "http://h/` + strings.Repeat("x", MaxWebhookURLBytes) + `", "secret": "k"}`), "webhook.url: longer than 2048 bytes"},
		{doc(`{"url": "http://h/", "secret": ""}`), "webhook.secret: must be a non-empty string"},
		{doc(`{"url": "http://h/", "secret": null}`), "webhook.secret: must be a string"},
		{doc(`{"url": "http://h/", "secret": "` + strings.Repeat("k", MaxWebhookSecretBytes+1) + `"}`), "webhook.secret: must be a non-empty string of at most 1024 bytes"},
		{doc(`{"url": "http://h/", "secret": " k"}`), "webhook.secret: must not begin or end with white space"},
		{doc(`{"url": "http://h/", "secret": "k", "events": []}`), "webhook.events: must name at least one event"},
		{doc(`{"url": "http://h/", "secret": "k", "events": "occupied"}`), "webhook.events: must be an array of event names"},
		{doc(`{"url": "http://h/", "secret": "k", "events": ["occupied", "member_added"]}`), `webhook.events[1]: unknown event "member_added"`},
		{doc(`{"url": "http://h/", "secret": "k", "events": ["occupied", "occupied"]}`), `webhook.events[1]: duplicate event "occupied"`},
		{doc(`{"url": "http://h/", "secret": "k", "events": [null]}`), "webhook.events[0]: must be a string"},
		{doc(`{"url": "http://h/", "secret": "k", "events": ["resync"]}`), `webhook.events[0]: unknown event "resync"`},
	}
	for _, c := range cases {
		_, err := ParsePrefixDocument([]byte(c.in))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want ErrInvalid containing %q", c.in, err, c.msg)
		}
	}
}

func TestKeepStoredSecret(t *testing.T) {
	stored := mustParseDocument(t, `{"webhook": {"url": "http://h/old", "secret": "kept"}}`)
	// What an admin read shows, sent back with another URL.
	d := mustParseDocument(t, `{"webhook": {"url": "http://h/new", "secret": "***", "events": ["occupied"]}}`)
	if !d.KeepsStoredSecret() {
		t.Fatal("*** must ask to keep the stored secret")
	}
	if err := d.KeepStoredSecret(stored); err != nil {
		t.Fatal(err)
	}
	if d.Webhook.Secret != "kept" || d.Webhook.URL != "http://h/new" || d.Webhook.Events != WebhookOccupied {
		t.Fatalf("webhook %+v, want the new URL and events with the stored secret", d.Webhook)
	}
	for _, none := range []*PrefixDocument{nil, mustParseDocument(t, `{}`)} {
		d := mustParseDocument(t, `{"webhook": {"url": "http://h/", "secret": "***"}}`)
		if err := d.KeepStoredSecret(none); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "webhook.secret") {
			t.Errorf("keeping a secret that is not stored: %v, want ErrInvalid on webhook.secret", err)
		}
	}
	plain := mustParseDocument(t, `{"webhook": {"url": "http://h/", "secret": "new"}}`)
	if plain.KeepsStoredSecret() || plain.KeepStoredSecret(stored) != nil || plain.Webhook.Secret != "new" {
		t.Fatal("a document with a secret of its own keeps it")
	}
}

func TestResolverWebhook(t *testing.T) {
	r := NewResolver(ResolverConfig{})
	if err := r.SetDocument("hooked", []byte(`{"rules": [{"match": "/hooked/.+", "config": {"public": true}}],
		"webhook": {"url": "http://h/", "secret": "k"}}`)); err != nil {
		t.Fatal(err)
	}
	if err := r.SetDocument("plain", []byte(`{"rules": []}`)); err != nil {
		t.Fatal(err)
	}
	if w := r.Webhook("/hooked/a"); w == nil || w.URL != "http://h/" {
		t.Fatalf("webhook of /hooked/a: %+v", w)
	}
	for _, ch := range []string{"/plain/a", "/none/a", "not a channel", "/hooked/"} {
		if w := r.Webhook(ch); w != nil {
			t.Errorf("webhook of %q: %+v, want none", ch, w)
		}
	}
	// A prefix decided by a Go function takes the webhook of its document.
	if err := r.Register("hooked", func(string) (*Config, error) { return &Config{Public: true}, nil }); err != nil {
		t.Fatal(err)
	}
	if w := r.Webhook("/hooked/a"); w == nil {
		t.Fatal("a registered function hid the document's webhook")
	}
	if err := r.SetDocument("hooked", nil); err != nil {
		t.Fatal(err)
	}
	if w := r.Webhook("/hooked/a"); w != nil {
		t.Fatal("the webhook outlived its document")
	}
	if allocs := testing.AllocsPerRun(100, func() { r.Webhook("/plain/abc") }); allocs != 0 {
		t.Errorf("Webhook allocates %v times", allocs)
	}
}
