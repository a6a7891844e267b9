package admin

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"time"
)

// palette colours partitions in the chart (partition p takes p mod len).
var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// chart geometry, in SVG user units.
const (
	chartW     = 720
	panelH     = 120
	padL       = 56
	padR       = 12
	padT       = 22
	padB       = 18
	legendH    = 22
	panelGap   = 8
	plotW      = chartW - padL - padR
	plotH      = panelH - padT - padB
	chartTotal = 2*panelH + panelGap + legendH
)

// renderChart draws the history as an SVG image: queued records per
// partition above, deliveries per second below, one line per partition,
// over the window span ending at the last sample. It holds no text taken
// from requests (numbers only), and no script.
func renderChart(samples []HistorySample, span time.Duration) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`,
		chartW, chartTotal, chartW, chartTotal)
	b.WriteString(`<rect width="100%" height="100%" fill="#fff"/>`)
	n := 0
	for _, s := range samples {
		n = max(n, len(s.Partitions))
	}
	var end time.Time
	if len(samples) > 0 {
		end = samples[len(samples)-1].At
	}
	panel(&b, 0, "queued records", samples, n, end, span, func(p HistoryPartition) float64 { return p.Queued })
	panel(&b, panelH+panelGap, "delivered per second", samples, n, end, span, func(p HistoryPartition) float64 { return p.DeliveredPerSecond })
	// legend
	y := 2*panelH + panelGap + 14
	for p := range n {
		x := padL + p*90
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="14" height="4" fill="%s"/><text x="%d" y="%d">partition %d</text>`,
			x, y-5, palette[p%len(palette)], x+18, y, p)
	}
	if len(samples) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#666">no samples yet</text>`, padL+8, padT+20)
	}
	b.WriteString(`</svg>`)
	return b.Bytes()
}

func panel(b *bytes.Buffer, top int, title string, samples []HistorySample, n int, end time.Time, span time.Duration, val func(HistoryPartition) float64) {
	top0 := top + padT
	maxV := 0.0
	for _, s := range samples {
		for _, p := range s.Partitions {
			maxV = max(maxV, val(p))
		}
	}
	scale := niceCeil(maxV)
	if scale <= 0 {
		scale = 1
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" font-weight="bold">%s</text>`, padL, top+14, title)
	fmt.Fprintf(b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#ccc"/>`, padL, top0, plotW, plotH)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#eee"/>`, padL, top0+plotH/2, padL+plotW, top0+plotH/2)
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, padL-4, top0+4, fmtNum(scale))
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">%s</text>`, padL-4, top0+plotH/2+4, fmtNum(scale/2))
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">0</text>`, padL-4, top0+plotH+4)
	fmt.Fprintf(b, `<text x="%d" y="%d">%s ago</text>`, padL, top0+plotH+13, spanText(span))
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end">now</text>`, padL+plotW, top0+plotH+13)
	for p := range n {
		var pts bytes.Buffer
		for _, s := range samples {
			if p >= len(s.Partitions) {
				continue
			}
			age := end.Sub(s.At).Seconds()
			x := float64(padL+plotW) - age/span.Seconds()*plotW
			if x < padL {
				continue
			}
			y := float64(top0+plotH) - val(s.Partitions[p])/scale*plotH
			fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
		}
		if pts.Len() > 0 {
			fmt.Fprintf(b, `<polyline fill="none" stroke-width="1.5" stroke="%s" points="%s"/>`, palette[p%len(palette)], bytes.TrimSpace(pts.Bytes()))
		}
	}
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (0 stays 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 0
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*e {
			return m * e
		}
	}
	return 10 * e
}

func fmtNum(v float64) string {
	if v >= 1 || v == 0 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 2, 64)
}

// spanText writes a window length the short way: "5 min", "90 s".
func spanText(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return strconv.Itoa(int(d/time.Minute)) + " min"
	}
	return strconv.Itoa(int(d.Round(time.Second)/time.Second)) + " s"
}
