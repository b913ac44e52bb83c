// Package client is the Go client of Imago's HTTP API (docs/http-api.md): produce (one request at
// a time, or batched in the background by a Producer), fetch, topics, local transactions, the
// broker as an XA resource (XAResource) and the server's statistics.
//
// # The model
//
// An Imago topic is split into partitions; each partition is an append-only log whose messages
// have dense offsets 0, 1, 2, … A produce request carries a batch of messages for one topic;
// the server answers 200 only once the whole batch is durable (fsync'd under the default
// policy), and the batch is one unit: all of its messages are stored, or none. The answer lists
// the (partition, offset) of every message in request order. A keyed message without a
// partition goes to hash(key) mod partitions, so one key's messages share a partition and keep
// their order there; an unkeyed one goes round-robin.
//
// # Unknown outcomes and safe retries
//
// A network error or a timeout leaves the outcome of a write unknown: the batch may or may not
// be stored. Retrying is safe only with an idempotency key: a repeat of a key the server has
// seen (within its dedupe window, 24 h by default, kept across restarts) returns the first
// answer with Duplicate set and stores nothing. So the client retries a produce only when it
// carries a key (ProduceOptions.IdempotencyKey, or ProduceOptions.Idempotent to have one made
// up), and never a produce without one: that error goes back to you. When the retries of a
// keyed produce run out after an attempt whose answer was lost, the error wraps
// ErrOutcomeUnknown (not the last 429 or 503, which says nothing about that attempt).
//
// A 502 or 504 never comes from the server: a proxy or load balancer in front of it answers so
// when the server's answer did not come, and the request may have been done. It is treated as
// a network error: retried where those are, of unknown outcome for a write.
//
// What is retried, with exponential backoff and jitter (WithRetries, WithBackoff), honouring
// the server's Retry-After: network errors, 2xx answers cut off on the way, and answers 429
// (back-pressure), 503 (not ready), 502 and 504 of reads (GET), of topic creation (PUT is idempotent by
// contract), of keyed produce requests, of Begin (a transaction nobody uses times out
// harmlessly) and of XAResource.Recover. The XA verbs and transaction writes are not repeated
// blindly: Tx.Commit settles an unknown outcome by asking the transaction's status, and a
// transaction manager settles an XA branch through Recover, as XA intends. A 2xx status means
// the server did what was asked even when the rest of its answer is lost: Tx.Commit then reads
// the positions from the transaction's status, XAResource.Commit reports the branch
// committed, and XAResource.Prepare finds its lost vote with Recover (listed: prepared, XA_OK;
// not listed: read-only and forgotten, XA_RDONLY; Recover failing: XAER_RMFAIL), as it does
// when a whole 2xx carries no vote or one it does not know. A 2xx of
// XAResource.Recover whose list cannot be read (cut off on every attempt, or not the JSON
// expected) is XAER_RMFAIL: the list is unknown, and a transaction manager scans again later.
// Every call takes a context, and no retry sleeps past its deadline.
//
// # The batching producer
//
// A Producer (Client.NewProducer) takes one message at a time (Send, with a callback or a
// result channel) and sends them in batches: a batch leaves when it holds ProducerMaxBatch
// messages or ProducerMaxBatchBytes bytes, or ProducerLinger after its first message. One
// batch is one HTTP request, hence one atomic, durable unit. Messages go through a fixed
// number of lanes (ProducerLanes); a lane has at most one request in flight, and every message
// of a key (or of an explicit partition) goes through the same lane, so the messages of a key
// are stored in the order they were sent, retries included. Unkeyed messages spread over the
// lanes.
//
// The producer is idempotent by default (ProducerIdempotent): it gives every batch a key of its
// own, made of a random producer id and a sequence number, so a batch whose answer was lost is
// retried without being stored twice. A batch whose retries run out (ProducerDeliveryTimeout)
// reports an error although it may have been stored: sending its messages again would store
// them twice (Delivery.Err). Turn it off only for data where a duplicate is harmless:
// a batch is then sent once, and a network error is reported to its callbacks as is.
//
// # Consumers
//
// Consumers pull: Fetch reads one partition from an offset and returns the messages and the
// offset to ask for next. With FetchOptions.Wait the call long-polls until a message arrives or
// the wait ends. Only durable, committed messages are ever returned.
//
// # Transactions
//
// A local transaction (Client.Begin) collects messages for any topics and makes them visible
// together at Commit, at consecutive offsets per partition, or never (Rollback, or its
// timeout). An XAResource lets a transaction manager enlist the broker in a two-phase commit
// beside databases, with the verbs and error codes of javax.transaction.xa.XAResource
// (*XAError).
//
// # Errors
//
// Errors from the server are *Error values carrying the HTTP status and the stable error code
// of the API; branch on Code (errors.As, IsCode), not on the message. The XA verbs return
// *XAError with the XA code instead.
//
// The request and response types are those of package api, which the gateway serves.
package client
