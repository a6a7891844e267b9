package api

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
)

// Key layout. Every collection is a prefix; parts of a key are separated by
// 0x00, which no process id, resource id or hash can contain, and sequence
// numbers are 8 bytes big-endian so keys sort in sequence order.
//
//	p/<pid>                    Process summary (and the event and job counters)
//	e/<pid>\x00<seq>           Event
//	i/<keyid>\x00<kind>\x00<v> idempotency record (with a TTL)
//	k/<id>                     API key (hash of the secret, never the secret)
//	kh/<sha256 hex>            key id, for lookup by secret
//	a/<id>                     App
//	aw/<appid>\x00<wfid>       the workflows an app owns
//	w/<id>                     Workflow
//	j/<id>                     Job
//	jp/<pid>\x00<seq>          job id: the jobs of a process, in submission order
//	jq/<pid>\x00<seq>          job id: jobs not finished yet (queued or running)
const (
	pfxProcess     = "p/"
	pfxEvent       = "e/"
	pfxIdem        = "i/"
	pfxKey         = "k/"
	pfxKeyHash     = "kh/"
	pfxApp         = "a/"
	pfxAppWorkflow = "aw/"
	pfxWorkflow    = "w/"
	pfxJob         = "j/"
	pfxProcessJob  = "jp/"
	pfxJobQueue    = "jq/"
)

// rkey builds prefix + parts joined by 0x00.
func rkey(prefix string, parts ...string) []byte {
	n := len(prefix)
	for _, p := range parts {
		n += len(p) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, prefix...)
	for i, p := range parts {
		if i > 0 {
			b = append(b, 0)
		}
		b = append(b, p...)
	}
	return b
}

// seqKey is prefix + pid + 0x00 + seq (8 bytes big-endian).
func seqKey(prefix, pid string, seq uint64) []byte {
	b := make([]byte, 0, len(prefix)+len(pid)+9)
	b = append(b, prefix...)
	b = append(b, pid...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, seq)
}

// seqPrefix is the prefix of every seqKey of pid.
func seqPrefix(prefix, pid string) []byte { return rkey(prefix, pid, "") }

// splitSeqKey undoes seqKey.
func splitSeqKey(prefix string, k []byte) (pid string, seq uint64, err error) {
	rest := k[len(prefix):]
	if len(rest) < 9 || rest[len(rest)-9] != 0 {
		return "", 0, fmt.Errorf("store: malformed key %q", k)
	}
	return string(rest[:len(rest)-9]), binary.BigEndian.Uint64(rest[len(rest)-8:]), nil
}

// getJSON reads key into v; ErrNotFound if absent.
func getJSON(tx Tx, key []byte, v any) error {
	b, err := tx.Get(key)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("store: decode %q: %w", key, err)
	}
	return nil
}

// putJSON writes v at key.
func putJSON(tx Tx, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return tx.Set(key, b, 0)
}

// getByID reads the JSON record stored under prefix for the request's {id}
// path value. A missing record, or one that visible (when not nil) says the
// caller may not see, is a 404 "no <what> <id>".
func getByID[T any](c *call, store Store, prefix, what string, visible func(T) bool) (T, error) {
	var rec T
	id, err := idParam(c.r, "id")
	if err != nil {
		return rec, err
	}
	err = store.View(c.r.Context(), func(tx Tx) error { return getJSON(tx, rkey(prefix, id), &rec) })
	if errors.Is(err, ErrNotFound) || (err == nil && visible != nil && !visible(rec)) {
		return rec, notFound("no %s %s", what, id)
	}
	return rec, err
}

// exists reports whether key is present.
func exists(tx Tx, key []byte) (bool, error) {
	_, err := tx.Get(key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// locks serialises writers of one process (its counters and event log) so
// concurrent appends never fight over the same keys. It is a fixed set of
// striped mutexes: memory does not grow with the number of processes.
type locks struct {
	seed maphash.Seed
	mu   [256]sync.Mutex
}

func newLocks() *locks { return &locks{seed: maphash.MakeSeed()} }

// lock locks the stripe of name and returns its unlock function.
func (l *locks) lock(name string) (unlock func()) {
	m := &l.mu[maphash.String(l.seed, name)%uint64(len(l.mu))]
	m.Lock()
	return m.Unlock
}
