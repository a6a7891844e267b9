package api

import (
	"errors"
	"hash/maphash"
	"sync"

	"github.com/flowedge/flowedge/internal/api/store"
)

// ownedBy reports whether key k may see and change a resource of user
// owner: keys of that user and admin keys may; a resource stored before
// owners (owner "") is for admin keys only.
func ownedBy(owner string, k *APIKey) bool {
	return k.Role == RoleAdmin || (owner != "" && owner == k.user())
}

// getByID reads the JSON record stored under prefix for the request's {id}
// path value. A missing record, or one that visible (when not nil) says the
// caller may not see, is a 404 "no <what> <id>".
func getByID[T any](c *call, st Store, prefix, what string, visible func(T) bool) (T, error) {
	var rec T
	id, err := idParam(c.r, "id")
	if err != nil {
		return rec, err
	}
	err = st.View(c.r.Context(), func(tx Tx) error { return store.GetJSON(tx, store.Key(prefix, id), &rec) })
	if errors.Is(err, ErrNotFound) || (err == nil && visible != nil && !visible(rec)) {
		return rec, notFound("no %s %s", what, id)
	}
	return rec, err
}

// locks serialises this backend's writers of one process (its counters and
// event log), which spares a shared database the conflicts (and retries)
// of concurrent appends to one process. Correctness does not depend on it:
// the store orders appends and keeps them exactly-once on its own, across
// backends too. It is a fixed set of striped mutexes: memory does not grow
// with the number of processes.
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
