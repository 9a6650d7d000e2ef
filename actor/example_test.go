package actor_test

import (
	"context"
	"fmt"

	"github.com/presencehq/presence/actor"
)

// tally counts visits per key; it needs no locking because only its actor's
// goroutine touches it.
type tally struct{ visits int }

type visitMsg struct {
	reply chan<- int // set only by Ask
}

func (t *tally) Receive(m visitMsg) {
	if m.reply != nil {
		m.reply <- t.visits
		return
	}
	t.visits++
}

func Example() {
	s := actor.NewSystem(actor.Options{}, func(key string) actor.Behavior[visitMsg] {
		return &tally{}
	})
	defer s.Shutdown(context.Background())

	for range 3 {
		if err := s.Tell("/chat/1", visitMsg{}); err != nil {
			fmt.Println("tell:", err)
		}
	}
	n, err := actor.Ask(context.Background(), s, "/chat/1", func(r chan<- int) visitMsg {
		return visitMsg{reply: r}
	})
	fmt.Println(n, err, s.Len())
	// Output: 3 <nil> 1
}
