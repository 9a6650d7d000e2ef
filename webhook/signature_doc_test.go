package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// validSignature reports whether the X-Presence-Signature header of a
// webhook request signs its raw body with the webhook's secret.
func validSignature(secret, body []byte, header string) bool {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(header), []byte(want))
}

// docBlock returns the code block of docs/API.md that follows the HTML
// comment marker.
func docBlock(t *testing.T, marker string) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "docs", "API.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(doc), "<!-- "+marker+" -->")
	if !ok {
		t.Fatalf("docs/API.md has no %q marker", marker)
	}
	_, after, ok = strings.Cut(after, "```")
	if !ok {
		t.Fatalf("no code block after %q", marker)
	}
	_, code, _ := strings.Cut(after, "\n") // the fence's language
	code, _, ok = strings.Cut(code, "```")
	if !ok {
		t.Fatalf("unterminated code block after %q", marker)
	}
	return code
}

// TestTheDocumentedGoCheckIsTheOneTested: the receivers of these tests
// check signatures with validSignature, which is the Go code docs/API.md
// shows, word for word.
func TestTheDocumentedGoCheckIsTheOneTested(t *testing.T) {
	src, err := os.ReadFile("signature_doc_test.go")
	if err != nil {
		t.Fatal(err)
	}
	block := docBlock(t, "webhook-signature-go")
	_, fn, ok := strings.Cut(block, "// validSignature")
	if !ok || !strings.Contains(string(src), "// validSignature"+fn) {
		t.Fatalf("the Go check in docs/API.md differs from validSignature in this file:\n%s", block)
	}
	body := []byte(`{"events":[]}`)
	sig := Sign([]byte(testSecret), body)
	if !validSignature([]byte(testSecret), body, sig) || !Verify([]byte(testSecret), body, sig) {
		t.Fatal("a signature made by Sign does not verify")
	}
	for _, bad := range []struct {
		secret, body, header string
	}{
		{testSecret, `{"events":[{}]}`, sig},  // body changed
		{"another secret", string(body), sig}, // another secret
		{testSecret, string(body), sig[len("sha256="):]},
		{testSecret, string(body), ""},
		{testSecret, string(body), "sha256=zz"},
	} {
		if validSignature([]byte(bad.secret), []byte(bad.body), bad.header) || Verify([]byte(bad.secret), []byte(bad.body), bad.header) {
			t.Errorf("verified %+v", bad)
		}
	}
}

// TestTheDocumentedNodeCheck runs the Node.js check of docs/API.md, as
// written there, on signatures made by Sign.
func TestTheDocumentedNodeCheck(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	body := `{"events":[{"channel":"/a/b","message_id":18,"type":"entering_users"}]}`
	cases := []struct {
		secret, body, header string
		valid                bool
	}{
		{testSecret, body, Sign([]byte(testSecret), []byte(body)), true},
		{testSecret, body + " ", Sign([]byte(testSecret), []byte(body)), false},
		{"another secret", body, Sign([]byte(testSecret), []byte(body)), false},
		{testSecret, body, "sha256=00", false},
		{testSecret, body, "", false},
	}
	type jsCase struct {
		Secret, Body, Header string
	}
	var js []jsCase
	for _, c := range cases {
		js = append(js, jsCase{c.secret, c.body, c.header})
	}
	input, err := json.Marshal(js)
	if err != nil {
		t.Fatal(err)
	}
	script := docBlock(t, "webhook-signature-node") + `
const cases = JSON.parse(process.argv[2]);
console.log(JSON.stringify(cases.map((c) => validSignature(c.Secret, Buffer.from(c.Body), c.Header))));
`
	file := filepath.Join(t.TempDir(), "check.mjs")
	if err := os.WriteFile(file, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(node, file, string(input)).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	var got []bool
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(cases) {
		t.Fatalf("node printed %s (%v)", out, err)
	}
	for i, c := range cases {
		if got[i] != c.valid {
			t.Errorf("case %d: the Node check says %v, want %v", i, got[i], c.valid)
		}
	}
}
