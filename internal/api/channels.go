package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/flowedge/flowedge/internal/api/store"
	"github.com/microcosm-cc/bluemonday"
)

// Channel and post limits. Lengths are counted in characters (Unicode code
// points) of the text as the client sent it, before HTML is removed; what
// is left after removing it must not be empty (see plainText).
const (
	MaxChannelName = 100    // characters of a channel name
	MaxPostContent = 10_000 // characters of a post's content
	MaxPostMedia   = 10     // media items of a post
	MaxMediaURL    = 2048   // bytes of a media URL
	MaxMediaAlt    = 500    // characters of a media item's alt text
)

// Store prefixes of channels and posts (see store/keys.go for the others):
//
//	ch/<id>                 Channel
//	cp/<channelid>\x00<id>  Post, in creation order within its channel
const (
	pfxChannel = "ch/"
	pfxPost    = "cp/"
)

// Channel is a named stream of posts. It belongs to the user of the key
// that created it: keys of that user and admin keys see it and post to it;
// to others it does not exist (404).
type Channel struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Owner     string    `json:"owner"`      // user id
	CreatedBy string    `json:"created_by"` // key id
	CreatedAt time.Time `json:"created_at"`
}

// Post is a message in a channel: plain-text content (HTML removed), media,
// or both.
type Post struct {
	ID        string    `json:"id"`
	ChannelID string    `json:"channel_id"`
	Content   string    `json:"content"`
	Media     []Media   `json:"media,omitempty"`
	MediaIDs  []string  `json:"media_ids,omitempty"` // uploads (POST /api/v1/media) of the author
	Author    string    `json:"author"`              // user id
	KeyID     string    `json:"key_id"`
	CreatedAt time.Time `json:"created_at"`
}

// Media is a post attachment, referenced by URL (the API stores no files).
type Media struct {
	URL  string `json:"url"`            // absolute http(s) URL; https in production
	Type string `json:"type,omitempty"` // image, video, audio or file
	Alt  string `json:"alt,omitempty"`  // plain text
}

// mediaInput is a media item as clients send it: a URL string, or an
// object {url, type, alt}.
type mediaInput Media

func (m *mediaInput) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var u string
		if err := json.Unmarshal(b, &u); err != nil {
			return err
		}
		*m = mediaInput{URL: u}
		return nil
	}
	if bytes.Equal(b, []byte("null")) {
		*m = mediaInput{}
		return nil
	}
	if len(b) == 0 || b[0] != '{' {
		return errors.New("a media item is a URL string or an object {url, type, alt}")
	}
	var o struct {
		URL  string `json:"url"`
		Type string `json:"type"`
		Alt  string `json:"alt"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return fmt.Errorf("media item: %w", err)
	}
	*m = mediaInput(o)
	return nil
}

type channelInput struct {
	Name string `json:"name"`
}

type postInput struct {
	Content  string       `json:"content"`
	Media    []mediaInput `json:"media"`
	MediaIDs []string     `json:"media_ids"`
}

// decodeChannel reads and checks a channel creation body; it returns the
// channel's name as plain text.
func decodeChannel(p *bluemonday.Policy, body []byte) (string, error) {
	var in channelInput
	if err := decodeJSON(body, &in); err != nil {
		return "", err
	}
	return plainText(p, "name", in.Name, MaxChannelName, true, false)
}

// decodePost reads and checks a post creation body: content is required
// unless media is given. production allows only https media URLs.
func decodePost(p *bluemonday.Policy, body []byte, production bool) (content string, media []Media, mediaIDs []string, err error) {
	var in postInput
	if err := decodeJSON(body, &in); err != nil {
		return "", nil, nil, err
	}
	if len(in.Media) > MaxPostMedia {
		return "", nil, nil, badRequest("media: at most %d items, got %d", MaxPostMedia, len(in.Media))
	}
	if len(in.MediaIDs) > MaxPostMedia {
		return "", nil, nil, badRequest("media_ids: at most %d, got %d", MaxPostMedia, len(in.MediaIDs))
	}
	for i, m := range in.Media {
		v, err := checkMedia(p, fmt.Sprintf("media[%d]", i), Media(m), production)
		if err != nil {
			return "", nil, nil, err
		}
		media = append(media, v)
	}
	content, err = plainText(p, "content", in.Content, MaxPostContent, len(media) == 0 && len(in.MediaIDs) == 0, true)
	if err != nil {
		return "", nil, nil, err
	}
	return content, media, in.MediaIDs, nil
}

// checkMedia checks one media item: an absolute http or https URL (https
// only in production) with a host and no user info, a known type, plain
// alt text.
func checkMedia(p *bluemonday.Policy, field string, m Media, production bool) (Media, error) {
	raw := strings.TrimSpace(m.URL)
	if raw == "" {
		return Media{}, badRequest("%s.url: required", field)
	}
	if len(raw) > MaxMediaURL || !utf8.ValidString(raw) || strings.IndexFunc(raw, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return Media{}, badRequest("%s.url: at most %d bytes of UTF-8 without spaces or control characters", field, MaxMediaURL)
	}
	if strings.ContainsAny(raw, "<>\"'`") { // markup characters: a URL carries them percent-encoded
		return Media{}, badRequest("%s.url: must not contain < > \" ' or ` (percent-encode them)", field)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Media{}, badRequest("%s.url: not a URL: %v", field, err)
	}
	switch {
	case production && u.Scheme != "https":
		return Media{}, badRequest("%s.url: must be an https URL", field)
	case u.Scheme != "https" && u.Scheme != "http":
		return Media{}, badRequest("%s.url: must be an http or https URL", field)
	case u.Host == "" || u.Hostname() == "":
		return Media{}, badRequest("%s.url: must name a host", field)
	case u.User != nil:
		return Media{}, badRequest("%s.url: must not carry user info", field)
	}
	switch m.Type {
	case "", "image", "video", "audio", "file":
	default:
		return Media{}, badRequest("%s.type: want image, video, audio or file, got %q", field, m.Type)
	}
	alt, err := plainText(p, field+".alt", m.Alt, MaxMediaAlt, false, false)
	if err != nil {
		return Media{}, err
	}
	return Media{URL: raw, Type: m.Type, Alt: alt}, nil
}

// createChannel: POST /api/v1/channels {name} → 201 Channel.
func (s *Server) createChannel(c *call, tx Tx) (result, error) {
	name, err := decodeChannel(s.text, c.body)
	if err != nil {
		return result{}, err
	}
	ch := Channel{ID: store.NewID(), Name: name, Owner: c.key.user(), CreatedBy: c.key.ID, CreatedAt: time.Now().UTC()}
	if err := store.PutJSON(tx, store.Key(pfxChannel, ch.ID), ch); err != nil {
		return result{}, fmt.Errorf("store channel: %w", err)
	}
	return created(ch, "/api/v1/channels/"+ch.ID)
}

// visible reports whether the caller may see and post to ch.
func visible(k *APIKey, ch Channel) bool { return k.Role == RoleAdmin || ch.Owner == k.user() }

// loadChannel reads channel id as the caller may see it: 404 when it does
// not exist or belongs to another user.
func loadChannel(tx Tx, k *APIKey, id string) (Channel, error) {
	var ch Channel
	err := store.GetJSON(tx, store.Key(pfxChannel, id), &ch)
	if errors.Is(err, ErrNotFound) || (err == nil && !visible(k, ch)) {
		return Channel{}, notFound("no channel %s", id)
	}
	return ch, err
}

// listChannels: GET /api/v1/channels, oldest first; the caller's channels
// (an admin key sees all).
func (s *Server) listChannels(c *call) (result, error) {
	out, err := listRecordsWhere(c.r, s.store, pfxChannel, func(ch Channel) bool { return visible(c.key, ch) },
		func(ch Channel) Channel { return ch })
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getChannel: GET /api/v1/channels/{id}.
func (s *Server) getChannel(c *call) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	var ch Channel
	err = s.store.View(c.r.Context(), func(tx Tx) error {
		ch, err = loadChannel(tx, c.key, id)
		return err
	})
	if err != nil {
		return result{}, err
	}
	return ok(ch)
}

// createPost: POST /api/v1/channels/{id}/posts {content, media} → 201 Post.
// Once it has committed, the "post.created" event carries the post to the
// webhooks of the channel's owner and of admin keys.
func (s *Server) createPost(c *call, tx Tx) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	ch, err := loadChannel(tx, c.key, id)
	if err != nil {
		return result{}, err
	}
	content, media, mediaIDs, err := decodePost(s.text, c.body, s.opts.Production)
	if err != nil {
		return result{}, err
	}
	if err := s.checkMediaIDs(c.r.Context(), c.key, mediaIDs); err != nil {
		return result{}, err
	}
	p := Post{ID: store.NewID(), ChannelID: id, Content: content, Media: media, MediaIDs: mediaIDs, Author: c.key.user(), KeyID: c.key.ID, CreatedAt: time.Now().UTC()}
	if err := store.PutJSON(tx, store.Key(pfxPost, id, p.ID), p); err != nil {
		return result{}, fmt.Errorf("store post: %w", err)
	}
	res, _ := created(p, "/api/v1/channels/"+id+"/posts/"+p.ID)
	// Only webhooks that may read the channel get its posts.
	res.after = func() { s.emit(EventPostCreated, ch.Owner, p) }
	return res, nil
}

// listPosts: GET /api/v1/channels/{id}/posts, oldest first.
func (s *Server) listPosts(c *call) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	if err := s.store.View(c.r.Context(), func(tx Tx) error {
		_, err := loadChannel(tx, c.key, id)
		return err
	}); err != nil {
		return result{}, err
	}
	out, err := listRecords(c.r, s.store, string(store.Key(pfxPost, id, "")), func(p Post) Post { return p })
	if err != nil {
		return result{}, err
	}
	return ok(out)
}

// getPost: GET /api/v1/channels/{id}/posts/{post_id}.
func (s *Server) getPost(c *call) (result, error) {
	id, err := idParam(c.r, "id")
	if err != nil {
		return result{}, err
	}
	postID, err := idParam(c.r, "post_id")
	if err != nil {
		return result{}, err
	}
	var p Post
	err = s.store.View(c.r.Context(), func(tx Tx) error {
		if _, err := loadChannel(tx, c.key, id); err != nil {
			return err
		}
		if err := store.GetJSON(tx, store.Key(pfxPost, id, postID), &p); errors.Is(err, ErrNotFound) {
			return notFound("no post %s in channel %s", postID, id)
		} else if err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return result{}, err
	}
	return ok(p)
}
