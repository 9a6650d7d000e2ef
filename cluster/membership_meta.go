package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// memberMetaVersion leads the encoded metadata so the format can evolve.
const memberMetaVersion = 1

// Flags of the metadata. memberFlagLeaving marks a node announcing a
// graceful departure (see Membership.Leave for why it travels in the
// metadata); memberFlagDraining a node that started shutting down and
// hands its channels over, still alive (see Membership.AnnounceDraining).
const (
	memberFlagLeaving  byte = 1
	memberFlagDraining byte = 2
)

// ErrMemberMetaTooLarge is returned when encoded metadata exceeds what
// memberlist carries for a node (memberlist.MetaMaxSize bytes).
var ErrMemberMetaTooLarge = errors.New("cluster: member metadata too large")

// MemberMeta is what a node tells the others about itself through gossip.
type MemberMeta struct {
	RPC  string // transport address (host:port) for forwarding and replication
	Raft string // Raft transport address
	HTTP string // public HTTP address
	// Incarnation distinguishes successive runs of a node under one name; a
	// node picks a larger value each time it starts.
	Incarnation uint64
}

// encode packs m as: version byte, flags byte, then RPC, Raft and HTTP each
// as a uvarint length and bytes, then Incarnation as a uvarint.
func (m MemberMeta) encode(flags byte) ([]byte, error) {
	b := make([]byte, 0, 2+len(m.RPC)+len(m.Raft)+len(m.HTTP)+4*binary.MaxVarintLen64)
	b = append(b, memberMetaVersion, flags)
	for _, s := range []string{m.RPC, m.Raft, m.HTTP} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, m.Incarnation)
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMemberMetaTooLarge, len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// decodeMemberMeta reverses encode, rejecting truncated or unknown input.
func decodeMemberMeta(b []byte) (meta MemberMeta, flags byte, err error) {
	if len(b) < 2 || b[0] != memberMetaVersion {
		return MemberMeta{}, 0, errors.New("cluster: unknown member metadata version")
	}
	flags = b[1]
	b = b[2:]
	var fields [3]string
	for i := range fields {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return MemberMeta{}, 0, errors.New("cluster: truncated member metadata")
		}
		fields[i] = string(b[k : k+int(n)])
		b = b[k+int(n):]
	}
	inc, k := binary.Uvarint(b)
	if k <= 0 || k != len(b) {
		return MemberMeta{}, 0, errors.New("cluster: malformed member metadata")
	}
	return MemberMeta{RPC: fields[0], Raft: fields[1], HTTP: fields[2], Incarnation: inc}, flags, nil
}
