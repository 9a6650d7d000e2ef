package wire

import "context"

// The node-to-node methods of the router, each defined here once; the
// router registers a handler for every one of them (router/handlers.go).
// Methods 1 to MaxMethod belong to the router; the server's own start
// above MaxMethod.
const (
	MethodUpdate    uint16 = 1  // UpdateRequest batch → UpdateResults
	MethodGet       uint16 = 2  // GetRequest → GetReply
	MethodSince     uint16 = 3  // SinceRequest → SinceReply
	MethodInterest  uint16 = 4  // InterestRequest → empty
	MethodPush      uint16 = 5  // PushRequest → PushReply (may be empty)
	MethodExtract   uint16 = 6  // ExtractRequest → ExtractReply
	MethodInstall   uint16 = 7  // InstallRequest → InstallReply (empty from older nodes)
	MethodReplicate uint16 = 8  // ReplicateRequest → ReplicateReply
	MethodLeaves    uint16 = 9  // LeavesRequest → empty
	MethodLimit     uint16 = 10 // LimitRequest → LimitReply (empty for LimitReturn)
	MethodRelease   uint16 = 11 // ReleaseRequest → empty
	// MaxMethod is the highest method number reserved for the router.
	MaxMethod uint16 = 99
)

// The methods of the server-side API (the application's backend), from 20
// so that the router's own list can grow below them.
const (
	MethodInspect uint16 = 20 // InspectRequest → GetReply (whole states)
	MethodCan     uint16 = 21 // CanRequest → CanReply
	MethodClear   uint16 = 22 // ClearRequest → empty
)

// Member is a node as the router sees it: its unique name and the address
// of its node-to-node transport.
type Member struct {
	Name    string
	RPCAddr string
}

// Call makes one node-to-node call: it encodes the request with req and
// sends it to the node to as method, and returns the reply's body. Errors
// carry the sentinels of TransportErrors (errors.Is works across the wire).
// The router builds it around its transport; the packages of its parts
// take it in their configuration.
type Call func(ctx context.Context, to Member, method uint16, req func(*Encoder)) ([]byte, error)
