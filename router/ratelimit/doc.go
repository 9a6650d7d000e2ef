// Package ratelimit is the cluster-wide rate limit of /presence/update: one
// token bucket per user (20 tokens, 2 a second by default) for the whole
// cluster, whichever nodes the user's calls reach, without a network round
// trip on the common path.
//
// # Keepers and borrowers
//
// A user's bucket lives on the user's keeper: the ring owner of
// KeyPrefix+id, chosen like a channel's owner. A call entering the keeper
// takes a token there. A call entering another node spends a token that
// node borrowed of the bucket before (wire.MethodLimit, LimitBorrow); when
// the tokens held run low, the node borrows more in the background, so the
// next call does not wait. Only a call that finds no token here and no
// borrow in flight waits for one borrow (one round trip).
//
// Borrows are sized by the user's recent rate at the node (about a
// second of calls, at most MaxBorrow), and the keeper grants at most a fair
// share of what is left (its tokens divided among the nodes that borrowed
// within Idle and itself), so near the end of a burst every node holds at
// most a token or so: round-robin calls over three nodes are refused after
// about Burst calls, not Burst less what sits idle on other nodes. A
// waiting call is granted a token whenever the bucket has one.
//
// # No over-admission
//
// Tokens lent count against the bucket's capacity: the keeper refills its
// own part only up to Burst less the tokens out, so the tokens here and
// everywhere else never exceed Burst. A loan shrinks when the node gives
// tokens back (LimitReturn) or reports them spent (with its next borrow or
// return), and ends with its lease (Lease, counted from before the borrow
// was sent on the borrower, after the grant on the keeper, so the
// borrower always drops the tokens first). A spent report credits the
// refill the capacity held back since the spend, so a loan that counted
// spent tokens costs nothing once reported. Refusals take nothing.
//
// # Giving back
//
// A node gives back the tokens of a user idle there for Idle except one,
// which it keeps for the user's next call (a heartbeat every 30 s then
// never waits: the call spends the reserve and a background borrow
// refills it), and gives back everything shortly before the lease ends.
// When a bucket is empty and a call is refused, the keeper recalls the
// tokens other nodes hold of it (LimitRecall, at most once per
// SweepInterval): a user who moved to another node gets them back.
//
// # Failures
//
// A borrow that fails (keeper unreachable, BorrowTimeout) marks the keeper
// down for OwnerRetry: meanwhile this node decides the calls of the users
// it keeps with buckets of its own (tokenbucket.Limiter, the per-node
// limit), never refusing a call for want of the keeper, and then probes it
// in the background. During a partition, or until failure detection drops
// the keeper from the ring, a user can therefore get up to one bucket per
// node that cannot reach the keeper. When the ring gives a user's bucket
// to another node, the new keeper starts a full bucket and tokens already
// borrowed of the old one are still spent: at most one extra burst per
// move. Buckets are not handed over.
//
// # Memory
//
// Each table (buckets kept, tokens borrowed, fallback buckets) holds at
// most MaxUsers users; sweeps drop full buckets with nothing lent and no
// call here for Idle, and idle users holding nothing, and a full table
// evicts an arbitrary entry (tokens of an evicted borrower are lost until
// their lease ends, so eviction can only refuse, except for a keeper's
// evicted bucket, whose loans are forgotten).
//
// # Locks
//
// A table's shards are locked for reading to find a user's entry, alone
// only to add or drop one; a kept bucket has a lock of its own, so calls
// of different users do not wait for each other.
//
// # Metrics
//
// presence_ratelimit_decisions_total{path,result},
// presence_ratelimit_borrows_total{result},
// presence_ratelimit_borrowed_tokens_total,
// presence_ratelimit_returned_tokens_total,
// presence_ratelimit_recalls_total and presence_ratelimit_users{table}.
package ratelimit
