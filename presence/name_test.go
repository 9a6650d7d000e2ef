package presence

import (
	"strings"
	"testing"
)

func TestValidChannelName(t *testing.T) {
	long := "/p/" + strings.Repeat("x", MaxChannelNameBytes-3)
	cases := []struct {
		name   string
		prefix string // "" when invalid
	}{
		{"/a/b", "a"},
		{"/site/online", "site"},
		{"/topic/123", "topic"},
		{"/A-z_0/rest", "A-z_0"},
		{"/a/b/c/d", "a"},
		{"/a//", "a"},
		{"/a/with space", "a"},
		{"/chat/héllo wörld", "chat"},
		{"/chat/日本語", "chat"},
		{"/chat/\u00a0nbsp", "chat"},
		{"/chat/\uFFFD", "chat"}, // a real replacement character is fine
		{"/chat/😀", "chat"},
		{long, "p"},
		{long + "x", ""}, // 257 bytes
		{"", ""},
		{"/", ""},
		{"//", ""},
		{"//b", ""},
		{"/a", ""},
		{"/a/", ""},
		{"a/b", ""},
		{" /a/b", ""},
		{"/a b/c", ""},
		{"/a.b/c", ""},
		{"/é/c", ""},
		{"/a\x00/b", ""},
		{"/a/b\x00", ""},
		{"/a/b\n", ""},
		{"/a/\tb", ""},
		{"/a/b\x1f", ""},
		{"/a/b\x7f", ""},
		{"/a/b\u0080", ""}, // C1
		{"/a/b\u0085", ""},
		{"/a/b\u009f", ""},
		{"/a/b\xff", ""},         // invalid UTF-8
		{"/a/b\xc0\x80", ""},     // overlong NUL
		{"/a/b\xed\xa0\x80", ""}, // surrogate
		{"/a/b\xe6\x97", ""},     // truncated sequence
	}
	for _, c := range cases {
		prefix, ok := ChannelPrefix(c.name)
		if ok != (c.prefix != "") || prefix != c.prefix {
			t.Errorf("ChannelPrefix(%q) = %q, %v; want %q", c.name, prefix, ok, c.prefix)
		}
		if got := ValidChannelName(c.name); got != ok {
			t.Errorf("ValidChannelName(%q) = %v, ChannelPrefix says %v", c.name, got, ok)
		}
	}
}

func TestValidPrefix(t *testing.T) {
	valid := []string{"a", "site", "Topic_2", "a-b", strings.Repeat("p", MaxPrefixBytes)}
	invalid := []string{"", "a/b", "/a", "a b", "é", "a.b", "a\x00", strings.Repeat("p", MaxPrefixBytes+1)}
	for _, p := range valid {
		if !ValidPrefix(p) {
			t.Errorf("ValidPrefix(%q) = false", p)
		}
		if !ValidChannelName("/" + p + "/x") {
			t.Errorf("a valid prefix %q must make a valid name", p)
		}
	}
	for _, p := range invalid {
		if ValidPrefix(p) {
			t.Errorf("ValidPrefix(%q) = true", p)
		}
	}
}

func TestChannelNameDoesNotAllocate(t *testing.T) {
	names := []string{"/topic/12345", "/chat/héllo", "/a/b\xff", "/bad name/x"}
	allocs := testing.AllocsPerRun(100, func() {
		for _, n := range names {
			ChannelPrefix(n)
			ValidPrefix(n)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run, want 0", allocs)
	}
}

func BenchmarkValidChannelName(b *testing.B) {
	name := "/discourse-presence/topic/123456/reply"
	b.ReportAllocs()
	for b.Loop() {
		if !ValidChannelName(name) {
			b.Fatal("invalid")
		}
	}
}
