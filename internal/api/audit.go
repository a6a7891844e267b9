package api

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/httpx"
)

// AuditEntry records one security-relevant change: who (user and key),
// from where (client IP), when, under which request, did what to which
// resource.
type AuditEntry struct {
	ID         string    `json:"id"`
	Action     string    `json:"action"` // key.create, key.delete, webhook.create, webhook.delete
	ResourceID string    `json:"resource_id"`
	UserID     string    `json:"user_id"`
	KeyID      string    `json:"key_id"`
	IP         string    `json:"ip"`
	Timestamp  time.Time `json:"timestamp"`
	RequestID  string    `json:"request_id"`
}

// pfxAudit holds the audit log, newest first:
//
//	au/<descending id>  AuditEntry
//
// where the descending id is the entry's UUIDv7 with every hex digit d
// replaced by f-d, so an ascending scan meets the newest entry first.
const pfxAudit = "au/"

// descending maps a UUID to a string that sorts the other way round; it is
// its own inverse.
func descending(id string) string {
	b := []byte(id)
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9':
			b[i] = "fedcba9876"[c-'0']
		case c >= 'a' && c <= 'f':
			b[i] = "543210"[c-'a']
		}
	}
	return string(b)
}

// recordAudit stores an audit entry for action (e.g. "key.create",
// "webhook.delete") on the resource with id resourceID, in the same
// transaction as the change it records, so the entry store.Exists exactly when
// the change does (an idempotent replay records nothing again). The entry
// carries the caller's user id and key id, the client IP (see
// Options.TrustedProxies), the time and the request id.
// DefaultAuditRetention is how long audit entries are kept unless
// Options.AuditRetention says otherwise.
const DefaultAuditRetention = 365 * 24 * time.Hour

func (s *Server) recordAudit(tx Tx, c *call, action, resourceID string) error {
	e := AuditEntry{ID: store.NewID(), Action: action, ResourceID: resourceID, IP: s.clientIP(c.r),
		Timestamp: time.Now().UTC(), RequestID: c.info.id}
	if c.key != nil {
		e.UserID, e.KeyID = c.key.user(), c.key.ID
	}
	b, err := json.Marshal(e)
	if err == nil {
		// Entries expire after the retention: the log cannot grow forever.
		err = tx.Set(store.Key(pfxAudit, descending(e.ID)), b, s.opts.AuditRetention)
	}
	if err != nil {
		return fmt.Errorf("store audit entry %s %s: %w", action, resourceID, err)
	}
	return nil
}

// listAudit: GET /api/v1/audit?action=&cursor=&limit= (admin only), newest
// first. action, when given, keeps only the entries of that action; cursor
// is the id of the last entry of the previous page (next_cursor).
func (s *Server) listAudit(c *call) (result, error) {
	cursor, limit, err := page(c.r)
	if err != nil {
		return result{}, err
	}
	action := c.r.URL.Query().Get("action")
	if action != "" && !httpx.ValidToken(action, 64) {
		return result{}, badRequest("action: want an action name such as key.create, got %q", action)
	}
	var from []byte
	if cursor != "" {
		if err := validUUID("cursor", cursor); err != nil {
			return result{}, err
		}
		from = append(store.Key(pfxAudit, descending(cursor)), 0)
	}
	out := list[AuditEntry]{Items: []AuditEntry{}}
	err = s.store.View(c.r.Context(), func(tx Tx) error {
		return tx.Scan([]byte(pfxAudit), from, func(k, v []byte) (bool, error) {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return false, fmt.Errorf("store: decode %q: %w", k, err)
			}
			if action != "" && e.Action != action {
				return true, nil
			}
			if len(out.Items) == limit {
				out.NextCursor = out.Items[limit-1].ID
				return false, nil
			}
			out.Items = append(out.Items, e)
			return true, nil
		})
	})
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// clientIP is the address of the client of r: the host of RemoteAddr,
// unless that is one of Options.TrustedProxies, in which case it is the
// right-most address of X-Forwarded-For that is not a trusted proxy (a
// client can prepend anything to that header, but not append).
func (s *Server) clientIP(r *http.Request) string {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !s.trusted(addr) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break // a malformed hop: trust nothing to its left
		}
		if !s.trusted(a) {
			return a.Unmap().String()
		}
		host = a.Unmap().String()
	}
	return host
}

func (s *Server) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
