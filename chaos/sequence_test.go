package chaos

import (
	"errors"
	"strings"
	"testing"
)

func TestSequence(t *testing.T) {
	steps := []struct {
		channel string
		id      int64 // 0: a resync
		want    error
	}{
		{"/a", 10, nil}, // baseline
		{"/a", 11, nil},
		{"/b", 3, nil}, // channels are independent
		{"/a", 13, ErrGap},
		{"/a", 13, ErrBackwards}, // the gap moved the baseline
		{"/a", 12, ErrBackwards},
		{"/a", 0, nil},
		{"/a", 500, nil}, // a resync covers a jump
		{"/a", 502, ErrGap},
		{"/a", 0, nil},
		{"/a", 400, ErrBackwards}, // ids never repeat, even after a resync
		{"/b", 4, nil},
		{"/c", 0, nil}, // a resync before any message
		{"/c", 7, nil},
	}
	s := NewSequence()
	for i, st := range steps {
		if st.id == 0 {
			s.Resync(st.channel)
			continue
		}
		err := s.Message(st.channel, st.id)
		if !errors.Is(err, st.want) || (st.want == nil) != (err == nil) {
			t.Errorf("step %d (%s %d): %v, want %v", i, st.channel, st.id, err, st.want)
		}
		if err != nil && !strings.Contains(err.Error(), st.channel) {
			t.Errorf("step %d: %q does not name the channel", i, err)
		}
	}
}
