package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/flowedge/flowedge/internal/api/webhook"
	"github.com/flowedge/flowedge/internal/outbound"
)

// Webhook limits.
const (
	// MaxWebhooks bounds how many webhooks one backend keeps: every event
	// fans out to each subscriber.
	MaxWebhooks = 100
	// webhookResolveTimeout bounds the DNS lookup of a webhook's host at
	// creation (production).
	webhookResolveTimeout = 5 * time.Second
)

// webhookVisible reports whether key k may see and delete webhook w.
func webhookVisible(w *store.WebhookRecord, k *APIKey) bool {
	return k.Role == RoleAdmin || (w.Owner != "" && w.Owner == k.user())
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

// newWebhookSecret returns a fresh signing secret: "whsec_" and 256 random
// bits.
func newWebhookSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return "whsec_" + base64.RawURLEncoding.EncodeToString(b)
}

// validEvents checks and normalises the events of a webhook: a non-empty
// list of known events without repeats, or ["*"].
func validEvents(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, badRequest("events: want a non-empty list of %s, or [\"*\"]", strings.Join(webhook.Events, ", "))
	}
	if slices.Contains(in, "*") {
		if len(in) != 1 {
			return nil, badRequest(`events: "*" (every event) must stand alone`)
		}
		return []string{"*"}, nil
	}
	out := make([]string, 0, len(in))
	for _, e := range in {
		if !slices.Contains(webhook.Events, e) {
			return nil, badRequest("events: unknown event %q; want one of %s, or \"*\"", e, strings.Join(webhook.Events, ", "))
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
	if _, err := outbound.ParseURL(in.URL, s.opts.Production); err != nil {
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
			u, _ := outbound.ParseURL(in.URL, true)
			ctx, cancel := context.WithTimeout(c.r.Context(), webhookResolveTimeout)
			_, err := outbound.CheckHostPublic(ctx, outbound.ResolverOr(s.opts.Resolver), strings.TrimSuffix(u.Hostname(), "."))
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
	err = tx.Scan([]byte(store.PfxWebhook), nil, func(_, _ []byte) (bool, error) {
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
	w := Webhook{ID: store.NewID(), URL: in.URL, Events: in.Events, CreatedAt: time.Now().UTC(), CreatedBy: c.key.ID}
	rec := store.WebhookRecord{Webhook: w, Secret: secret, Owner: c.key.user(), Admin: c.key.Role == RoleAdmin}
	if err := store.PutJSON(tx, store.Key(store.PfxWebhook, w.ID), rec); err != nil {
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
	res.after = s.hooks.Refresh
	return res, nil
}

// listWebhooks: GET /api/v1/webhooks, oldest first; the caller's webhooks
// (an admin key sees all).
func (s *Server) listWebhooks(c *call) (result, error) {
	out, err := listRecordsWhere(c.r, s.store, store.PfxWebhook, func(rec store.WebhookRecord) bool { return webhookVisible(&rec, c.key) },
		func(rec store.WebhookRecord) Webhook { return rec.Webhook })
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getWebhook: GET /api/v1/webhooks/{id}, without its secret.
func (s *Server) getWebhook(c *call) (result, error) {
	rec, err := getByID(c, s.store, store.PfxWebhook, "webhook", func(r store.WebhookRecord) bool { return webhookVisible(&r, c.key) })
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
	var rec store.WebhookRecord
	if err := store.GetJSON(tx, store.Key(store.PfxWebhook, id), &rec); errors.Is(err, ErrNotFound) || (err == nil && !webhookVisible(&rec, c.key)) {
		return result{}, notFound("no webhook %s", id)
	} else if err != nil {
		return result{}, err
	}
	if err := tx.Delete(store.Key(store.PfxWebhook, id)); err != nil {
		return result{}, err
	}
	if err := s.recordAudit(tx, c, "webhook.delete", id); err != nil {
		return result{}, err
	}
	res, _ := noContent()
	res.after = s.hooks.Refresh
	return res, nil
}
