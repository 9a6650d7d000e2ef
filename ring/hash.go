package ring

import "math/bits"

// Multipliers are the 64-bit primes published with xxHash: large odd
// constants with well-spread bits, chosen there for their mixing quality.
const (
	prime1 uint64 = 0x9E3779B185EBCA87
	prime2 uint64 = 0xC2B2AE3D27D4EB4F
	prime3 uint64 = 0x165667B19E3779F9
	prime4 uint64 = 0x85EBCA77C2B2AE63
	prime5 uint64 = 0x27D4EB2F165667C5
)

// hashString is a single-lane hash in the style of xxHash64, written here so
// that every node, process and architecture computes the same value (unlike
// hash/maphash, whose seeds differ per process). It consumes eight bytes per
// step, which matters because channel names run to 256 bytes and every
// request hashes one. Bytes are read little-endian explicitly, so the result
// does not depend on the machine's byte order.
func hashString(s string) uint64 {
	h := prime5 + uint64(len(s))
	for ; len(s) >= 8; s = s[8:] {
		h ^= bits.RotateLeft64(le64(s)*prime2, 31) * prime1
		h = bits.RotateLeft64(h, 27)*prime1 + prime4
	}
	if len(s) >= 4 {
		h ^= le32(s) * prime1
		h = bits.RotateLeft64(h, 23)*prime2 + prime3
		s = s[4:]
	}
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i]) * prime5
		h = bits.RotateLeft64(h, 11) * prime1
	}
	return mix(h)
}

// mix is MurmurHash3's 64-bit finalizer: a bijection in which every input
// bit affects every output bit with probability close to one half.
func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xFF51AFD7ED558CCD
	h ^= h >> 33
	h *= 0xC4CEB9FE1A85EC53
	h ^= h >> 33
	return h
}

// score is the rendezvous weight of a member for a key. Mixing the XOR of
// the two hashes is enough because both inputs are already avalanched; a
// full hash of the pair per member would cost a lookup far more.
func score(keyHash, memberHash uint64) uint64 {
	return mix(keyHash ^ memberHash)
}

// le64 reads the first eight bytes of s as a little-endian word; the
// compiler merges this pattern into a single load on little-endian CPUs.
func le64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// le32 reads the first four bytes of s as a little-endian word.
func le32(s string) uint64 {
	_ = s[3]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24
}
