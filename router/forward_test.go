package router

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

func TestBatchResultsFillItems(t *testing.T) {
	res := wire.NewUpdateResults(3)
	res.Add([]bool{true, false, true, true, false, false, false, false, true}, nil)
	res.Add(nil, fmt.Errorf("deep: %w", presence.ErrMoved))
	res.Add([]bool{false}, nil)
	b := res.Bytes()
	batch := []*updateItem{{}, {}, {}}
	if err := decodeBatchResults(b, "n2", batch); err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, true, true, false, false, false, false, true}; !reflect.DeepEqual(batch[0].vals, want) || batch[0].err != nil {
		t.Errorf("first: %v %v", batch[0].vals, batch[0].err)
	}
	if !errors.Is(batch[1].err, presence.ErrMoved) || batch[1].vals != nil {
		t.Errorf("second: %v %v", batch[1].vals, batch[1].err)
	}
	if !reflect.DeepEqual(batch[2].vals, []bool{false}) {
		t.Errorf("third: %v", batch[2].vals)
	}
	// The answers share an array: one caller appending must not reach another.
	_ = append(batch[0].vals, false)
	if !reflect.DeepEqual(batch[2].vals, []bool{false}) {
		t.Errorf("append to the first answers changed the third: %v", batch[2].vals)
	}
	if err := decodeBatchResults(b, "n2", batch[:2]); !errors.Is(err, presence.ErrInvalid) {
		t.Errorf("answers for 3 decoded into a batch of 2: %v", err)
	}
	for n := range len(b) {
		if err := decodeBatchResults(b[:n], "n2", batch); !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}
