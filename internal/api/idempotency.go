package api

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/httpx"
)

// idemRecord is an answer kept for the repeats of a request.
type idemRecord struct {
	Fingerprint string    `json:"fp"` // method, path and body of the first request
	Status      int       `json:"status"`
	ContentType string    `json:"ct,omitempty"`
	Location    string    `json:"loc,omitempty"`
	Body        []byte    `json:"body,omitempty"`
	RequestID   string    `json:"rid"`
	At          time.Time `json:"at"`
}

// writeFunc is the logic of a mutating route; it runs inside the write's
// transaction and may be run again if that transaction loses a conflict.
type writeFunc func(c *call, tx Tx) (result, error)

// write turns fn into a mutating handler with exactly-once effects. It reads
// the body, takes the lock named by lockOf (if any: the process whose
// counters fn changes), and runs fn in one transaction together with the
// request's idempotency records:
//   - if an answer is stored under the request's X-Request-ID or
//     Idempotency-Key (scoped to the API key), that answer is returned and fn
//     does not run;
//   - else fn runs and, when it succeeds (2xx), its answer is stored under
//     those keys in the same commit, so the effect and its answer are durable
//     together or not at all. Errors store nothing: they had no effect.
//
// A stored key met with a different method, path or body is a client error
// (422), not a replay. An answer that carries a secret (a new API key) is
// not stored: fn names in result.forRepeats what repeats get instead.
func (s *Server) write(lockOf func(*http.Request) string, fn writeFunc) handler {
	return func(c *call) (result, error) {
		body, err := readBody(c.r)
		if err != nil {
			return result{}, err
		}
		c.body = body
		keys, err := idemKeys(c)
		if err != nil {
			return result{}, err
		}
		fp := fingerprint(c.r, body)
		if lockOf != nil {
			if name := lockOf(c.r); name != "" {
				unlock := s.locks.lock(name)
				defer unlock()
			}
		}
		var res result
		err = s.store.Update(c.r.Context(), func(tx Tx) error {
			res = result{}
			for _, k := range keys {
				var rec idemRecord
				err := store.GetJSON(tx, k, &rec)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				if rec.Fingerprint != fp {
					return problem(http.StatusUnprocessableEntity, typeIdemReuse,
						"this X-Request-ID or Idempotency-Key was used by request %s with a different method, path or body", rec.RequestID)
				}
				res = result{status: rec.Status, body: rec.Body, ctype: rec.ContentType, location: rec.Location, replayed: true}
				return nil
			}
			r, err := fn(c, tx)
			if err != nil {
				return err
			}
			if r.status == 0 {
				r.status = http.StatusOK
			}
			if err := r.encode(); err != nil {
				return err
			}
			if r.status < 300 && len(keys) > 0 {
				rec := idemRecord{Fingerprint: fp, Status: r.status, ContentType: r.ctype,
					Location: r.location, Body: r.body, RequestID: c.info.id, At: time.Now().UTC()}
				if p := r.forRepeats; p != nil {
					cp := *p
					cp.RequestID = c.info.id
					body, err := marshal(&cp)
					if err != nil {
						return err
					}
					rec.Status, rec.ContentType, rec.Location, rec.Body = cp.Status, "application/problem+json", "", append(body, '\n')
				}
				b, err := json.Marshal(rec)
				if err != nil {
					return err
				}
				for _, k := range keys {
					if err := tx.Set(k, b, s.opts.IdempotencyTTL); err != nil {
						return err
					}
				}
			}
			res = r
			return nil
		})
		if err != nil {
			return result{}, err
		}
		if res.replayed {
			s.metrics.replays.Inc()
		} else if res.after != nil {
			res.after() // still under the lock: effects leave in commit order
		}
		return res, nil
	}
}

// idemKeys returns the store keys of the request's idempotency records:
// one for X-Request-ID (a sane token; others are ignored, as they are for
// the request id) and one for Idempotency-Key (400 if malformed), both
// scoped to the caller's API key.
func idemKeys(c *call) ([][]byte, error) {
	kid := ""
	if c.key != nil {
		kid = c.key.ID
	}
	var keys [][]byte
	if v := c.r.Header.Get("X-Request-ID"); httpx.ValidToken(v, 200) {
		keys = append(keys, store.Key(store.PfxIdem, kid, "r", v))
	}
	if v := c.r.Header.Get("Idempotency-Key"); v != "" {
		if !validIdemKey(v) {
			return nil, badRequest("Idempotency-Key: want 1 to 255 printable ASCII characters")
		}
		keys = append(keys, store.Key(store.PfxIdem, kid, "k", v))
	}
	return keys, nil
}

func validIdemKey(v string) bool {
	if len(v) > 255 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < ' ' || v[i] > '~' {
			return false
		}
	}
	return true
}

// fingerprint identifies a request's method, path and body.
func fingerprint(r *http.Request, body []byte) string {
	h := sha256.New()
	h.Write([]byte(r.Method))
	h.Write([]byte{0})
	h.Write([]byte(r.URL.Path))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil)[:16])
}
