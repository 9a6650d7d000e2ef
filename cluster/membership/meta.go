package membership

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// metaVersion leads the encoded metadata so the format can evolve. Version
// 2 dropped the Raft address: Raft runs over the RPC address.
const metaVersion = 2

// Flags of the metadata. flagLeaving marks a node announcing a
// graceful departure (see Membership.Leave for why it travels in the
// metadata); flagDraining a node that started shutting down and
// hands its channels over, still alive (see Membership.AnnounceDraining).
const (
	flagLeaving  byte = 1
	flagDraining byte = 2
)

// ErrMetaTooLarge is returned when encoded metadata exceeds what
// memberlist carries for a node (memberlist.MetaMaxSize bytes).
var ErrMetaTooLarge = errors.New("membership: metadata too large")

// Meta is what a node tells the others about itself through gossip.
type Meta struct {
	RPC  string // transport address (host:port): forwarding, replication and Raft
	HTTP string // public HTTP address
	// Incarnation distinguishes successive runs of a node under one name; a
	// node picks a larger value each time it starts.
	Incarnation uint64
}

// encode packs m as: version byte, flags byte, then RPC and HTTP each as a
// uvarint length and bytes, then Incarnation as a uvarint.
func (m Meta) encode(flags byte) ([]byte, error) {
	b := make([]byte, 0, 2+len(m.RPC)+len(m.HTTP)+3*binary.MaxVarintLen64)
	b = append(b, metaVersion, flags)
	for _, s := range []string{m.RPC, m.HTTP} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, m.Incarnation)
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// decodeMeta reverses encode, rejecting truncated or unknown input.
func decodeMeta(b []byte) (meta Meta, flags byte, err error) {
	if len(b) < 2 || b[0] != metaVersion {
		return Meta{}, 0, errors.New("membership: unknown metadata version")
	}
	flags = b[1]
	b = b[2:]
	var fields [2]string
	for i := range fields {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return Meta{}, 0, errors.New("membership: truncated metadata")
		}
		fields[i] = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	inc, k := binary.Uvarint(b)
	if k <= 0 || k != len(b) {
		return Meta{}, 0, errors.New("membership: malformed metadata")
	}
	return Meta{RPC: fields[0], HTTP: fields[1], Incarnation: inc}, flags, nil
}
