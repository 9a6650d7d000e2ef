package api

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// How a documented example is held against a real answer: JSON equal but
// for the values its x-replay marks variable, whose type alone must agree;
// a stream frame by frame; other text line by line.

// jsonKind names the JSON type of a decoded value.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// diffJSON lists where got differs from want. Values at the pointers of
// variable only need the same JSON type.
func diffJSON(want, got any, variable map[string]bool, ptr string) []string {
	if variable[ptr] {
		if jsonKind(want) != jsonKind(got) {
			return []string{fmt.Sprintf("%s: a %s, documented as a %s (a variable value)", where(ptr), jsonKind(got), jsonKind(want))}
		}
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: got %s, documented %s", where(ptr), compact(got), compact(want))}
		}
		var out []string
		for _, k := range slices.Sorted(maps.Keys(w)) {
			child := ptr + "/" + escapePointer(k)
			gv, present := g[k]
			if !present {
				out = append(out, fmt.Sprintf("%s: missing from the answer", where(child)))
				continue
			}
			out = append(out, diffJSON(w[k], gv, variable, child)...)
		}
		for _, k := range slices.Sorted(maps.Keys(g)) {
			if _, documented := w[k]; !documented {
				out = append(out, fmt.Sprintf("%s: in the answer (%s) but not in the example", where(ptr+"/"+escapePointer(k)), compact(g[k])))
			}
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: got %s, documented %s", where(ptr), compact(got), compact(want))}
		}
		var out []string
		for i := range w {
			out = append(out, diffJSON(w[i], g[i], variable, fmt.Sprintf("%s/%d", ptr, i))...)
		}
		return out
	}
	if compact(want) != compact(got) {
		return []string{fmt.Sprintf("%s: got %s, documented %s", where(ptr), compact(got), compact(want))}
	}
	return nil
}

func where(ptr string) string {
	if ptr == "" {
		return "the body"
	}
	return ptr
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func compact(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// sseFrame is one frame of an event stream: a comment, or an event.
type sseFrame struct {
	comment         string // without the leading ": "
	id, event, data string
	hasID           bool
}

func (f sseFrame) String() string {
	if f.comment != "" {
		return ": " + f.comment
	}
	return fmt.Sprintf("event %q data %s", f.event, f.data)
}

// parseSSEFrame parses one frame (its lines, without the blank line).
func parseSSEFrame(text string) (sseFrame, error) {
	var f sseFrame
	for line := range strings.SplitSeq(strings.TrimSuffix(text, "\n"), "\n") {
		if c, ok := strings.CutPrefix(line, ":"); ok {
			f.comment = strings.TrimPrefix(c, " ")
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			f.id, f.hasID = value, true
		case "event":
			f.event = value
		case "data":
			f.data = value
		default:
			return f, fmt.Errorf("unknown field in %q", line)
		}
	}
	return f, nil
}

// parseSSEExample splits a documented stream into frames.
func parseSSEExample(text string) ([]sseFrame, error) {
	if !strings.HasSuffix(text, "\n\n") {
		return nil, fmt.Errorf("a stream example must end with a blank line")
	}
	var out []sseFrame
	for block := range strings.SplitSeq(strings.TrimSuffix(text, "\n\n"), "\n\n") {
		f, err := parseSSEFrame(block)
		if err != nil {
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

// diffSSEFrame compares a real frame with a documented one: comments
// exactly, events by name, id (an opaque cursor: present, not compared)
// and data as JSON.
func diffSSEFrame(want, got sseFrame, variable []string) []string {
	if want.comment != "" || got.comment != "" {
		if want.comment != got.comment {
			return []string{fmt.Sprintf("got %s, documented %s", got, want)}
		}
		return nil
	}
	var out []string
	if got.event != want.event {
		out = append(out, fmt.Sprintf("event %q, documented %q", got.event, want.event))
	}
	if want.hasID && got.id == "" {
		out = append(out, "no id (cursor)")
	}
	wantData, err := decodeJSON([]byte(want.data))
	if err != nil {
		return append(out, fmt.Sprintf("documented data is not JSON: %v", err))
	}
	gotData, err := decodeJSON([]byte(got.data))
	if err != nil {
		return append(out, fmt.Sprintf("data %q is not JSON: %v", got.data, err))
	}
	vars := map[string]bool{}
	for _, p := range variable {
		if _, ok := lookupPointer(wantData, p); ok {
			vars[p] = true
		}
	}
	for _, d := range diffJSON(wantData, gotData, vars, "") {
		out = append(out, "data "+d)
	}
	return out
}

// missingLines returns the lines of excerpt that body lacks, each looked
// for after the previous one: an excerpt is documented in the body's order.
func missingLines(excerpt, body string) []string {
	lines := strings.Split(body, "\n")
	var missing []string
	at := 0
	for want := range strings.SplitSeq(strings.TrimSuffix(excerpt, "\n"), "\n") {
		i := slices.Index(lines[at:], want)
		if i < 0 {
			missing = append(missing, want)
			continue
		}
		at += i + 1
	}
	return missing
}
