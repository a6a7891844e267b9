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
//     in commit order, and a request id appends at most one event to a
//     process (the store enforces both); jobs of one process run one at a time, in submission
//     order, on a bounded pool of workers.
//   - Partitions: a request for a process (X-Process-ID, a {pid} path segment
//     or ?process_id=) that another partition owns is refused with 421, using
//     the same partition function as the edge. With a shared store
//     (store.Shared: PostgreSQL) the count and its epoch are the store's, and
//     every write to a process checks them again in its own transaction, so
//     two backends never append to one process under different counts.
//   - Owners: processes, jobs, apps, workflows, channels, posts and webhooks
//     belong to the user of the key that created them; other members' keys
//     get 404 (422 when a body names one), admin keys see all. Stored names,
//     descriptions and text have their HTML removed.
//   - Storage: the Store (package store) is the embedded Badger store
//     (badgerstore) or PostgreSQL (pgstore); both pass one conformance suite
//     (storetest).
//   - Jobs survive crashes: a job queued or running when the process died is
//     queued again at start and resumes at its first unfinished step (a delay
//     waits only what is left; an event step is never appended twice; an http
//     step that was in flight is sent again, with the same Idempotency-Key).
//
// Webhooks (POST/GET/DELETE /api/v1/webhooks) deliver Flow events to HTTP
// receivers:
//   - Events: post.created, job.succeeded, job.failed, job.cancelled
//     (package webhook), or "*" for all; each is emitted once, after the change
//     that raised it has committed.
//   - Ownership: a webhook belongs to the user of the key that created it,
//     as a channel does; keys of that user and admin keys see and delete
//     it, to others it does not exist (404). post.created and job events
//     go only to the webhooks of the resource's owner and of admin keys.
//   - URL rules (package outbound): absolute http(s), a host, no userinfo, at most
//     2048 bytes. In production: https only, and neither the host as written
//     nor any address it resolves to may be loopback, private, link-local
//     (cloud metadata 169.254.169.254, fd00:ec2::254), CGNAT, multicast,
//     reserved or unspecified (also inside IPv4-mapped, NAT64 and 6to4
//     forms). Names are resolved at creation (Options.Resolver) and again at
//     every dial, and the connection goes to a vetted address, so DNS
//     rebinding cannot reach inside. Proxy variables are ignored; redirects
//     are not followed (a 3xx is a failure).
//   - Body: {"id": event id, "event", "created_at", "data": the resource}.
//     Headers: X-Flow-Event, X-Flow-Delivery (a UUID per event and webhook,
//     the same on every attempt: receivers dedupe on it), X-Flow-Webhook-ID,
//     X-Flow-Timestamp (unix seconds of the attempt) and X-Flow-Signature:
//     "sha256=" + hex(HMAC-SHA256(key = the webhook's secret as returned at
//     creation, message = X-Flow-Timestamp + "." + raw body)). Receivers
//     recompute it, compare in constant time and reject timestamps more
//     than a few minutes away (VerifyWebhook does all three). The secret is
//     shown only in the 201 of the creation; repeats of that request get a
//     409 naming the webhook.
//   - Delivery is durable: each delivery is journaled at emit time (in
//     Redis with Options.Redis, else in the store) and removed at its final
//     result; it waits in a bounded in-memory queue for a pool of workers
//     (a full queue delays it), and one waiting or under way when the
//     process dies is made after the next start, with the same
//     X-Flow-Delivery (Webhooks.InMemory: the old best-effort queue, which
//     drops when full). Each attempt has a 10s deadline; connection
//     errors, timeouts, 408, 429 and 5xx but 501 are retried
//     (go-retryablehttp) with exponential backoff and jitter, Retry-After
//     honoured but capped, up to 5 attempts; other answers are final.
//   - Each target host has a circuit breaker (gobreaker), shared with
//     workflow http steps: 5 consecutive failures open it, nothing is sent
//     while it is open, and after 1 minute one probe decides.
//   - Metrics: flow_webhook_deliveries_total{result=success|failure|
//     breaker_open|dropped}, flow_breaker_open{host}.
//
// Handlers return (value, error); one place (respond) writes every answer and
// every RFC 9457 problem+json error.
package api
