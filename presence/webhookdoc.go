package presence

import (
	"encoding/json"
	"strconv"
	"strings"
)

// Limits of a prefix document's webhook.
const (
	MaxWebhookURLBytes    = 2048
	MaxWebhookSecretBytes = 1024
	// RedactedSecret is what admin reads show instead of a webhook's
	// secret. A document written with it as the secret keeps the secret
	// already stored for the prefix (PrefixDocument.KeepStoredSecret), so
	// that a document read back can be written back unchanged.
	RedactedSecret = "***"
)

// WebhookEvents is a set of the events a webhook delivers.
type WebhookEvents uint8

// The events a webhook may select, one bit each.
const (
	// WebhookEnteringUsers: a user's first client arrived.
	WebhookEnteringUsers WebhookEvents = 1 << iota
	// WebhookLeavingUserIDs: users' last clients left or expired.
	WebhookLeavingUserIDs
	// WebhookCountDelta: the count of a count-only channel changed.
	WebhookCountDelta
	// WebhookOccupied: the channel's first user arrived.
	WebhookOccupied
	// WebhookVacated: the channel's last user left.
	WebhookVacated
	// AllWebhookEvents is every event: a webhook without an events list.
	AllWebhookEvents = WebhookEnteringUsers | WebhookLeavingUserIDs | WebhookCountDelta | WebhookOccupied | WebhookVacated
)

// webhookEventNames are the events' names in documents, in canonical order.
var webhookEventNames = [...]struct {
	name string
	bit  WebhookEvents
}{
	{"entering_users", WebhookEnteringUsers},
	{"leaving_user_ids", WebhookLeavingUserIDs},
	{"count_delta", WebhookCountDelta},
	{"occupied", WebhookOccupied},
	{"vacated", WebhookVacated},
}

// Has reports whether every event of x is in s.
func (s WebhookEvents) Has(x WebhookEvents) bool { return s&x == x }

// Names lists the events of s in canonical order.
func (s WebhookEvents) Names() []string {
	names := make([]string, 0, len(webhookEventNames))
	for _, e := range webhookEventNames {
		if s.Has(e.bit) {
			names = append(names, e.name)
		}
	}
	return names
}

// Webhook is where the owner of a prefix's channels POSTs their events,
// signed with Secret (package webhook delivers them).
type Webhook struct {
	// URL is an absolute http or https URL, kept as written.
	URL string
	// Secret keys the HMAC-SHA256 signature of every request. It is never
	// shown by admin reads (RedactedSecret).
	Secret string
	// Events selects what is delivered; AllWebhookEvents when the document
	// omits the list.
	Events WebhookEvents
}

func (d *PrefixDocument) parseWebhook(val json.RawMessage) error {
	if isNull(val) {
		return nil
	}
	w := &Webhook{Events: AllWebhookEvents}
	var hasURL, hasSecret bool
	err := eachMember(val, "webhook", func(key string, val json.RawMessage) error {
		var err error
		switch key {
		case "url":
			hasURL = true
			w.URL, err = parseHTTPURL(val, "webhook.url", MaxWebhookURLBytes)
		case "secret":
			hasSecret = true
			w.Secret, err = parseSecret(val, "webhook.secret")
		case "events":
			w.Events, err = parseWebhookEvents(val, "webhook.events")
		default:
			err = invalidf("webhook", "unknown field %q", key)
		}
		return err
	})
	switch {
	case err != nil:
		return err
	case !hasURL:
		return invalidf("webhook.url", "required")
	case !hasSecret:
		return invalidf("webhook.secret", "required")
	}
	d.Webhook = w
	return nil
}

func parseSecret(val json.RawMessage, path string) (string, error) {
	s, err := decodeString(val, path)
	switch {
	case err != nil:
		return "", err
	case s == "" || len(s) > MaxWebhookSecretBytes:
		return "", invalidf(path, "must be a non-empty string of at most %d bytes", MaxWebhookSecretBytes)
	case strings.TrimSpace(s) != s:
		// Almost always a copy-and-paste accident, and invisible later since
		// the secret is never shown.
		return "", invalidf(path, "must not begin or end with white space")
	}
	return s, nil
}

// parseWebhookEvents reads a non-empty list of distinct event names.
func parseWebhookEvents(val json.RawMessage, path string) (WebhookEvents, error) {
	var names []*string
	if err := json.Unmarshal(val, &names); err != nil {
		return 0, invalidf(path, "must be an array of event names")
	}
	if len(names) == 0 {
		return 0, invalidf(path, "must name at least one event (omit it for all of them)")
	}
	var set WebhookEvents
	for i, n := range names {
		at := path + "[" + strconv.Itoa(i) + "]"
		if n == nil {
			return 0, invalidf(at, "must be a string")
		}
		bit := webhookEventBit(*n)
		switch {
		case bit == 0:
			return 0, invalidf(at, "unknown event %q: use %s", *n, strings.Join(AllWebhookEvents.Names(), ", "))
		case set.Has(bit):
			return 0, invalidf(at, "duplicate event %q", *n)
		}
		set |= bit
	}
	return set, nil
}

func webhookEventBit(name string) WebhookEvents {
	for _, e := range webhookEventNames {
		if e.name == name {
			return e.bit
		}
	}
	return 0
}

// webhookJSON is a webhook's canonical JSON.
type webhookJSON struct {
	URL    string   `json:"url"`
	Secret string   `json:"secret"`
	Events []string `json:"events"`
}

func (w *Webhook) json(secret string) *webhookJSON {
	if w == nil {
		return nil
	}
	return &webhookJSON{URL: w.URL, Secret: secret, Events: w.Events.Names()}
}

// KeepsStoredSecret reports whether the document's webhook secret is
// RedactedSecret: the writer asks to keep the secret stored for the prefix.
func (d *PrefixDocument) KeepsStoredSecret() bool {
	return d.Webhook != nil && d.Webhook.Secret == RedactedSecret
}

// KeepStoredSecret replaces a RedactedSecret webhook secret by the secret
// of stored, the prefix's document stored now (nil: none). It fails with
// ErrInvalid when stored has no webhook: there is no secret to keep.
func (d *PrefixDocument) KeepStoredSecret(stored *PrefixDocument) error {
	if !d.KeepsStoredSecret() {
		return nil
	}
	if stored == nil || stored.Webhook == nil {
		return invalidf("webhook.secret", "%q keeps the stored secret, but the prefix has no webhook stored: send the secret", RedactedSecret)
	}
	w := *d.Webhook
	w.Secret = stored.Webhook.Secret
	d.Webhook = &w
	return nil
}
