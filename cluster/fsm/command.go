package fsm

import (
	"encoding/json"
	"fmt"
)

// Op names a command in the Raft log.
type Op string

// The commands of the log.
const (
	// OpPut stores Command.Value under Command.Key.
	OpPut Op = "put"
	// OpDelete removes Command.Key, answering ErrKeyNotFound when the map
	// does not hold it.
	OpDelete Op = "delete"
)

// Command is one entry of the Raft log. JSON keeps it readable in a
// debugger and extensible; the documents are small and writes rare.
type Command struct {
	Op    Op     `json:"op"`
	Key   string `json:"key"`
	Value []byte `json:"value,omitempty"`
}

// Encode returns c as the data of a Raft log entry, which FSM.Apply
// decodes.
func (c Command) Encode() ([]byte, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode command: %w", err)
	}
	return data, nil
}
