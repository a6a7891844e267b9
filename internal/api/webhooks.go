package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// pfxWebhook is the key prefix of webhooks: wh/<id> → webhookRecord (the
// signing secret included: it is needed to sign, so it is stored as is).
const pfxWebhook = "wh/"

// Webhook limits.
const (
	// MaxWebhooks bounds how many webhooks one backend keeps: every event
	// fans out to each subscriber.
	MaxWebhooks = 100
	// webhookResolveTimeout bounds the DNS lookup of a webhook's host at
	// creation (production).
	webhookResolveTimeout = 5 * time.Second
)

// Webhook headers.
const (
	HeaderWebhookEvent     = "X-Flow-Event"     // the event name
	HeaderWebhookDelivery  = "X-Flow-Delivery"  // a UUID per (event, webhook), the same on every attempt
	HeaderWebhookTimestamp = "X-Flow-Timestamp" // unix seconds of this attempt
	HeaderWebhookSignature = "X-Flow-Signature" // "sha256=" + hex HMAC-SHA256(secret, timestamp + "." + body)
)

// Webhook is a subscription as the API shows it: never its secret.
type Webhook struct {
	ID        string    `json:"id"`
	URL       string    `json:"url"`
	Events    []string  `json:"events"` // event names, or ["*"] for all
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"` // id of the key that created it
}

// webhookRecord is a Webhook as stored. A webhook belongs to the user of
// the key that created it, as a channel does: keys of that user and admin
// keys see and delete it; to others it does not exist (404). It gets the
// events of resources that user may read: post.created only for that
// user's channels, unless an admin key created it (every channel).
type webhookRecord struct {
	Webhook
	Secret string `json:"secret"`
	Owner  string `json:"owner,omitempty"` // user id; "" (stored before owners) means admin keys only
	Admin  bool   `json:"admin,omitempty"` // created by an admin key
}

// visibleTo reports whether key k may see and delete the webhook.
func (w *webhookRecord) visibleTo(k *APIKey) bool {
	return k.Role == RoleAdmin || (w.Owner != "" && w.Owner == k.user())
}

// sees reports whether the webhook may get an event about a resource of
// user owner ("" for a resource every key may read).
func (w *webhookRecord) sees(owner string) bool {
	return owner == "" || w.Admin || (w.Owner != "" && w.Owner == owner)
}

// createdWebhook is the answer to a creation: the only time the secret is
// shown.
type createdWebhook struct {
	Webhook
	Secret string `json:"secret"`
}

type webhookInput struct {
	URL    string   `json:"url"`
	Events []string `json:"events"`
}

// wants reports whether the webhook subscribes to event.
func (w *Webhook) wants(event string) bool {
	return slices.Contains(w.Events, "*") || slices.Contains(w.Events, event)
}

// newWebhookSecret returns a fresh signing secret: "whsec_" and 256 random
// bits.
func newWebhookSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b)
}

// SignWebhook returns the X-Flow-Signature value of a delivery: "sha256="
// and the hex HMAC-SHA256, keyed with the webhook's secret (its bytes as
// shown at creation), of the decimal unix timestamp, ".", and the body.
func SignWebhook(secret string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Errors of VerifyWebhook, tested with errors.Is.
var (
	ErrWebhookSignature = errors.New("webhook: signature does not match")
	ErrWebhookTimestamp = errors.New("webhook: timestamp missing, malformed or outside the tolerance")
)

// VerifyWebhook checks a delivery as a receiver should: timestamp and
// signature are the X-Flow-Timestamp and X-Flow-Signature headers, body the
// raw request body. The timestamp must be within tolerance of now (0 means
// 5 minutes), which bounds replays, and the signature must match
// (compared in constant time).
func VerifyWebhook(secret, timestamp, signature string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = 5 * time.Minute
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrWebhookTimestamp, timestamp)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s away from now", ErrWebhookTimestamp, d.Round(time.Second))
	}
	if !hmac.Equal([]byte(signature), []byte(SignWebhook(secret, ts, body))) {
		return ErrWebhookSignature
	}
	return nil
}

// validEvents checks and normalises the events of a webhook: a non-empty
// list of known events without repeats, or ["*"].
func validEvents(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, badRequest("events: want a non-empty list of %s, or [\"*\"]", strings.Join(webhookEvents, ", "))
	}
	if slices.Contains(in, "*") {
		if len(in) != 1 {
			return nil, badRequest(`events: "*" (every event) must stand alone`)
		}
		return []string{"*"}, nil
	}
	out := make([]string, 0, len(in))
	for _, e := range in {
		if !slices.Contains(webhookEvents, e) {
			return nil, badRequest("events: unknown event %q; want one of %s, or \"*\"", e, strings.Join(webhookEvents, ", "))
		}
		if slices.Contains(out, e) {
			return nil, badRequest("events: %q is listed twice", e)
		}
		out = append(out, e)
	}
	return out, nil
}

// parseWebhookInput decodes and checks a creation body, without the DNS
// check.
func (s *Server) parseWebhookInput(body []byte) (webhookInput, error) {
	var in webhookInput
	if err := decodeJSON(body, &in); err != nil {
		return in, err
	}
	if _, err := parseOutboundURL(in.URL, s.opts.Production); err != nil {
		return in, badRequest("url: %v", err)
	}
	events, err := validEvents(in.Events)
	if err != nil {
		return in, err
	}
	in.Events = events
	return in, nil
}

// createWebhookRoute is POST /api/v1/webhooks. It checks the body, and in
// production resolves the URL's host (every address must be public),
// before the write: a DNS lookup has no place inside a transaction.
func (s *Server) createWebhookRoute() handler {
	write := s.write(nil, s.createWebhook)
	return func(c *call) (result, error) {
		body, err := readBody(c.r)
		if err != nil {
			return result{}, err
		}
		in, err := s.parseWebhookInput(body)
		if err != nil {
			return result{}, err
		}
		if s.opts.Production {
			u, _ := parseOutboundURL(in.URL, true)
			ctx, cancel := context.WithTimeout(c.r.Context(), webhookResolveTimeout)
			_, err := checkHostPublic(ctx, resolverOr(s.opts.Resolver), strings.TrimSuffix(u.Hostname(), "."))
			cancel()
			if err != nil {
				return result{}, unprocessable("url: %v", err)
			}
		}
		c.r.Body = io.NopCloser(bytes.NewReader(body))
		return write(c)
	}
}

// createWebhook: POST /api/v1/webhooks {url, events} → 201 with the signing
// secret, once.
func (s *Server) createWebhook(c *call, tx Tx) (result, error) {
	in, err := s.parseWebhookInput(c.body)
	if err != nil {
		return result{}, err
	}
	n := 0
	err = tx.Scan([]byte(pfxWebhook), nil, func(_, _ []byte) (bool, error) {
		n++
		return n < MaxWebhooks, nil
	})
	if err != nil {
		return result{}, err
	}
	if n >= MaxWebhooks {
		return result{}, conflict("there are already %d webhooks, the most one backend keeps; delete one first", MaxWebhooks)
	}
	secret := newWebhookSecret()
	w := Webhook{ID: newID(), URL: in.URL, Events: in.Events, CreatedAt: time.Now().UTC(), CreatedBy: c.key.ID}
	rec := webhookRecord{Webhook: w, Secret: secret, Owner: c.key.user(), Admin: c.key.Role == RoleAdmin}
	if err := putJSON(tx, rkey(pfxWebhook, w.ID), rec); err != nil {
		return result{}, err
	}
	if err := s.recordAudit(tx, c, "webhook.create", w.ID); err != nil {
		return result{}, err
	}
	res, _ := created(createdWebhook{Webhook: w, Secret: secret}, "/api/v1/webhooks/"+w.ID)
	// The secret is not stored as the answer for repeats of this request:
	// they get a 409 naming the webhook.
	res.forRepeats = conflict("this request already created webhook %s; its secret is shown only once: delete that webhook and create another", w.ID)
	res.forRepeats.Extra = map[string]any{"webhook_id": w.ID}
	res.after = s.hooks.refresh
	return res, nil
}

// listWebhooks: GET /api/v1/webhooks, oldest first; the caller's webhooks
// (an admin key sees all).
func (s *Server) listWebhooks(c *call) (result, error) {
	out, err := listRecordsWhere(c.r, s.store, pfxWebhook, func(rec webhookRecord) bool { return rec.visibleTo(c.key) },
		func(rec webhookRecord) Webhook { return rec.Webhook })
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getWebhook: GET /api/v1/webhooks/{id}, without its secret.
func (s *Server) getWebhook(c *call) (result, error) {
	rec, err := getByID(c, s.store, pfxWebhook, "webhook", func(r webhookRecord) bool { return r.visibleTo(c.key) })
	if err != nil {
		return result{}, err
	}
	return ok(rec.Webhook)
}

// deleteWebhook: DELETE /api/v1/webhooks/{id} → 204. No delivery to it
// starts after the answer; an attempt under way may finish.
func (s *Server) deleteWebhook(c *call, tx Tx) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	var rec webhookRecord
	if err := getJSON(tx, rkey(pfxWebhook, id), &rec); errors.Is(err, ErrNotFound) || (err == nil && !rec.visibleTo(c.key)) {
		return result{}, notFound("no webhook %s", id)
	} else if err != nil {
		return result{}, err
	}
	if err := tx.Delete(rkey(pfxWebhook, id)); err != nil {
		return result{}, err
	}
	if err := s.recordAudit(tx, c, "webhook.delete", id); err != nil {
		return result{}, err
	}
	res, _ := noContent()
	res.after = s.hooks.refresh
	return res, nil
}

// loadWebhooks reads every webhook.
func loadWebhooks(ctx context.Context, store Store) ([]webhookRecord, error) {
	var out []webhookRecord
	err := store.View(ctx, func(tx Tx) error {
		out = out[:0]
		return tx.Scan([]byte(pfxWebhook), nil, func(k, v []byte) (bool, error) {
			var rec webhookRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return false, fmt.Errorf("store: decode %q: %w", k, err)
			}
			out = append(out, rec)
			return true, nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("load webhooks: %w", err)
	}
	return out, nil
}
