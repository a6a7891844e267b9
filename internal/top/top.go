// Package top is `edge top`: a live terminal view of a running edge's
// partitions (backend, readiness, breaker, queued, in flight, dead letters,
// oldest age, deliveries per second and a sparkline of the queue's last
// minutes), the figures of the admin status page. It reads only the admin
// API (/edge/v1/partitions, /edge/v1/history, /health/health) and changes
// nothing.
package top

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/flowedge/flowedge/internal/admin"
)

// Options configure Run.
type Options struct {
	// Admin is the base URL of the edge's admin listener, e.g.
	// "http://127.0.0.1:8686" (required).
	Admin string
	// Token is the admin bearer token ("" = none sent).
	Token string
	// Interval between refreshes (zero: 2 s).
	Interval time.Duration
	// In and Out are the terminal (nil: standard input and output).
	In  io.Reader
	Out io.Writer
	// Client makes the requests (nil: a client with a 5 s timeout).
	Client *http.Client
}

// Run shows the view until the user quits (q, Esc or Ctrl-C) or ctx ends.
func Run(ctx context.Context, opt Options) error {
	if opt.Admin == "" {
		return errors.New("top: the admin URL is required")
	}
	if opt.Interval <= 0 {
		opt.Interval = 2 * time.Second
	}
	if opt.Client == nil {
		opt.Client = &http.Client{Timeout: 5 * time.Second}
	}
	popts := []tea.ProgramOption{tea.WithAltScreen(), tea.WithContext(ctx)}
	if opt.In != nil {
		popts = append(popts, tea.WithInput(opt.In))
	}
	if opt.Out != nil {
		popts = append(popts, tea.WithOutput(opt.Out))
	}
	m := &model{opt: opt, src: &source{base: strings.TrimRight(opt.Admin, "/"), token: opt.Token, client: opt.Client}}
	_, err := tea.NewProgram(m, popts...).Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// Partition is one row of /edge/v1/partitions.
type Partition struct {
	Partition        int     `json:"partition"`
	Backend          string  `json:"backend"`
	Ready            bool    `json:"ready"`
	Misconfigured    bool    `json:"misconfigured"`
	Breaker          string  `json:"breaker"`
	Queued           int     `json:"queued"`
	InFlight         int     `json:"in_flight"`
	DeadLetters      int     `json:"dead_letters"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

// Snapshot is what one refresh read.
type Snapshot struct {
	At         time.Time
	Health     string
	Version    string
	Partitions []Partition
	History    []admin.HistorySample
}

// source reads the admin API.
type source struct {
	base, token string
	client      *http.Client
}

func (s *source) get(ctx context.Context, path string, v any, auth bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.base+path, nil)
	if err != nil {
		return err
	}
	if auth && s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("GET %s: 401: the admin token is missing or wrong (-token or $EDGE_ADMIN_TOKEN)", path)
	case resp.StatusCode/100 != 2 && !(path == "/health/health" && resp.StatusCode == http.StatusServiceUnavailable):
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// Fetch reads one snapshot.
func (s *source) Fetch(ctx context.Context) (Snapshot, error) {
	snap := Snapshot{At: time.Now()}
	var parts struct {
		Partitions []Partition `json:"partitions"`
	}
	if err := s.get(ctx, "/edge/v1/partitions", &parts, true); err != nil {
		return snap, err
	}
	snap.Partitions = parts.Partitions
	var hist admin.HistoryView
	if err := s.get(ctx, "/edge/v1/history", &hist, true); err != nil {
		return snap, err
	}
	snap.History = hist.Samples
	var health struct {
		Status  string `json:"status"`
		Version string `json:"version"`
	}
	if err := s.get(ctx, "/health/health", &health, false); err == nil {
		snap.Health, snap.Version = health.Status, health.Version
	}
	return snap, nil
}

// The messages of the program.
type (
	tickMsg    struct{}
	fetchedMsg struct {
		snap Snapshot
		err  error
	}
)

type model struct {
	opt    Options
	src    *source
	snap   Snapshot
	err    error
	width  int
	loaded bool
}

func (m *model) fetch() tea.Msg {
	ctx, cancel := context.WithTimeout(context.Background(), m.opt.Client.Timeout+time.Second)
	defer cancel()
	s, err := m.src.Fetch(ctx)
	return fetchedMsg{snap: s, err: err}
}

func (m *model) tick() tea.Cmd {
	return tea.Tick(m.opt.Interval, func(time.Time) tea.Msg { return tickMsg{} })
}

func (m *model) Init() tea.Cmd { return m.fetch }

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		switch msg.String() {
		case "q", "esc", "ctrl+c":
			return m, tea.Quit
		case "r":
			return m, m.fetch
		}
	case tea.WindowSizeMsg:
		m.width = msg.Width
	case tickMsg:
		return m, m.fetch
	case fetchedMsg:
		m.err = msg.err
		if msg.err == nil {
			m.snap, m.loaded = msg.snap, true
		}
		return m, m.tick()
	}
	return m, nil
}

func (m *model) View() string {
	return Render(m.opt.Admin, m.snap, m.loaded, m.err, m.width)
}

// Render draws a snapshot as text, width columns wide (0: unbounded).
func Render(admin string, s Snapshot, loaded bool, err error, width int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "flowedge top  %s", admin)
	if s.Version != "" {
		fmt.Fprintf(&b, "  edge %s", s.Version)
	}
	if s.Health != "" {
		fmt.Fprintf(&b, "  %s", s.Health)
	}
	if loaded {
		fmt.Fprintf(&b, "  updated %s", s.At.Format("15:04:05"))
	}
	b.WriteString("   q quits, r refreshes\n\n")
	if err != nil {
		fmt.Fprintf(&b, "error: %v\n\n", err)
	}
	if !loaded {
		if err == nil {
			b.WriteString("loading…\n")
		}
		return clip(b.String(), width)
	}
	rates := map[int]float64{}
	depth := map[int][]float64{}
	for _, h := range s.History {
		for _, p := range h.Partitions {
			depth[p.Partition] = append(depth[p.Partition], p.Queued)
		}
	}
	if n := len(s.History); n > 0 {
		for _, p := range s.History[n-1].Partitions {
			rates[p.Partition] = p.DeliveredPerSecond
		}
	}
	fmt.Fprintf(&b, "%4s  %-30s  %-13s  %-9s  %8s  %9s  %6s  %8s  %8s  %s\n",
		"PART", "BACKEND", "STATE", "BREAKER", "QUEUED", "IN FLIGHT", "DEAD", "OLDEST", "DELIV/S", "QUEUED, LAST MINUTES")
	var tq, tf, td int
	var tr float64
	for _, p := range s.Partitions {
		state := "ready"
		switch {
		case p.Misconfigured:
			state = "misconfigured"
		case !p.Ready:
			state = "NOT READY"
		}
		fmt.Fprintf(&b, "%4d  %-30s  %-13s  %-9s  %8d  %9d  %6d  %8s  %8.1f  %s\n",
			p.Partition, short(p.Backend, 30), state, p.Breaker, p.Queued, p.InFlight, p.DeadLetters,
			age(p.OldestAgeSeconds), rates[p.Partition], Sparkline(depth[p.Partition], 24))
		tq, tf, td, tr = tq+p.Queued, tf+p.InFlight, td+p.DeadLetters, tr+rates[p.Partition]
	}
	fmt.Fprintf(&b, "%4s  %-30s  %-13s  %-9s  %8d  %9d  %6d  %8s  %8.1f\n", "all", "", "", "", tq, tf, td, "", tr)
	return clip(b.String(), width)
}

// sparks are the eight heights of a sparkline cell.
var sparks = []rune("▁▂▃▄▅▆▇█")

// Sparkline draws the last width values of vs, scaled to their maximum.
func Sparkline(vs []float64, width int) string {
	if len(vs) > width {
		vs = vs[len(vs)-width:]
	}
	top := 0.0
	for _, v := range vs {
		top = max(top, v)
	}
	out := make([]rune, len(vs))
	for i, v := range vs {
		k := 0
		if top > 0 {
			k = int(v / top * float64(len(sparks)-1))
		}
		out[i] = sparks[min(max(k, 0), len(sparks)-1)]
	}
	return string(out)
}

func age(s float64) string {
	switch {
	case s <= 0:
		return "-"
	case s < 60:
		return fmt.Sprintf("%.1fs", s)
	case s < 3600:
		return fmt.Sprintf("%.1fm", s/60)
	default:
		return fmt.Sprintf("%.1fh", s/3600)
	}
}

func short(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// clip cuts every line to width runes (0: no limit), so a narrow terminal
// does not wrap the table.
func clip(s string, width int) string {
	if width <= 0 {
		return s
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if r := []rune(l); len(r) > width {
			lines[i] = string(r[:width])
		}
	}
	return strings.Join(lines, "\n")
}
