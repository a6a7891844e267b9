// Package api is the Flow API served by the api-flow backend (cmd/api): one
// process per partition, behind the edge.
//
// Guarantees:
//   - Durability: every write is committed (and fsynced) to the Store before
//     its answer is sent, so an answer of 2xx survives a crash, kill -9
//     included.
//   - Exactly-once effects: a mutating request that carries X-Request-ID or
//     Idempotency-Key stores its answer in the same transaction as its effect.
//     A repeat (same key, same API key) gets the first answer back — same
//     status, same body, header Idempotent-Replayed: true — and changes
//     nothing, also after a restart, for Options.IdempotencyTTL.
//   - Ordering: events of one process get consecutive sequence numbers from 1
//     in commit order; jobs of one process run one at a time, in submission
//     order, on a bounded pool of workers.
//   - Ownership: a request for a process (X-Process-ID, a {pid} path segment or
//     ?process_id=) that another partition owns is refused with 421, using the
//     same partition function as the edge.
//   - Jobs survive crashes: a job queued or running when the process died is
//     queued again at start and resumes at its first unfinished step (a delay
//     waits only what is left; an event step is never appended twice; an http
//     step that was in flight is sent again, with the same Idempotency-Key).
//
// Handlers return (value, error); one place (respond) writes every answer and
// every RFC 9457 problem+json error.
package api
