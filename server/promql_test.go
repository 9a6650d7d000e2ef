package server_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// A reader of the PromQL a dashboard writes, enough to list the series
// selectors of an expression: every metric name with its label matchers.
// Function and aggregation names, keywords, label lists (by, on, ...),
// strings, ranges, numbers, durations and Grafana variables are skipped.

// promqlSelector is one vector selector of an expression.
type promqlSelector struct {
	metric   string
	matchers []string // as written, without spaces: instance=~"$instance"
}

// promqlAggregations are PromQL's aggregation operators, which may be
// followed by a by/without clause instead of their parenthesis.
var promqlAggregations = []string{"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
	"count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"}

// promqlLabelLists are the keywords followed by a parenthesised label list.
var promqlLabelLists = []string{"by", "without", "on", "ignoring", "group_left", "group_right"}

// promqlKeywords are the other words that are not metric names.
var promqlKeywords = []string{"bool", "offset", "and", "or", "unless", "atan2", "inf", "nan"}

// promqlSelectors lists the vector selectors of expr.
func promqlSelectors(expr string) ([]promqlSelector, error) {
	var out []promqlSelector
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipPromQLString(expr, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ at %d", i)
			}
			i += end + 1
		case c == '{':
			return nil, fmt.Errorf("a selector without a metric name at %d: name the metric", i)
		case c == '$' || isDigit(c) || c == '.':
			// A Grafana variable ($x, ${x}), a number or a duration.
			i++
			for i < len(expr) && (isIdentPart(expr[i]) || expr[i] == '.' || expr[i] == '{' && expr[i-1] == '$' || expr[i] == '}') {
				i++
			}
		case isIdentStart(c):
			end := i
			for end < len(expr) && isIdentPart(expr[end]) {
				end++
			}
			word := expr[i:end]
			next := end
			for next < len(expr) && expr[next] == ' ' {
				next++
			}
			followedBy := func(b byte) bool { return next < len(expr) && expr[next] == b }
			switch {
			case slices.Contains(promqlLabelLists, word) && followedBy('('):
				closing := strings.IndexByte(expr[next:], ')')
				if closing < 0 {
					return nil, fmt.Errorf("unclosed label list after %q", word)
				}
				i = next + closing + 1
			case slices.Contains(promqlLabelLists, word), slices.Contains(promqlKeywords, strings.ToLower(word)),
				slices.Contains(promqlAggregations, word), followedBy('('):
				i = end // a keyword, an aggregation or a function
			default:
				sel := promqlSelector{metric: word}
				i = end
				if followedBy('{') {
					matchers, after, err := promqlMatchers(expr, next)
					if err != nil {
						return nil, err
					}
					sel.matchers, i = matchers, after
				}
				out = append(out, sel)
			}
		default:
			i++ // operators, parentheses, commas, spaces
		}
	}
	return out, nil
}

// promqlMatchers reads the label matchers of the selector body at expr[open]
// ('{') and returns them and the index after the closing '}'.
func promqlMatchers(expr string, open int) ([]string, int, error) {
	var matchers []string
	var cur strings.Builder
	for i := open + 1; i < len(expr); {
		switch c := expr[i]; c {
		case '"', '\'', '`':
			end, err := skipPromQLString(expr, i)
			if err != nil {
				return nil, 0, err
			}
			cur.WriteString(expr[i:end])
			i = end
		case ',', '}':
			if m := cur.String(); m != "" {
				matchers = append(matchers, m)
			}
			cur.Reset()
			i++
			if c == '}' {
				return matchers, i, nil
			}
		case ' ':
			i++
		default:
			cur.WriteByte(c)
			i++
		}
	}
	return nil, 0, fmt.Errorf("unclosed { at %d", open)
}

// skipPromQLString returns the index after the string literal at expr[i].
func skipPromQLString(expr string, i int) (int, error) {
	quote := expr[i]
	for j := i + 1; j < len(expr); j++ {
		switch {
		case expr[j] == '\\' && quote != '`':
			j++
		case expr[j] == quote:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unclosed string at %d", i)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}
func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) }

func TestPromQLSelectors(t *testing.T) {
	for expr, want := range map[string]string{
		`presence_channels{instance=~"$instance"}`: `presence_channels{instance=~"$instance"}`,
		`sum by (route, method) (rate(presence_http_requests_total{instance=~"$instance", status=~"4..|5.."}[$__rate_interval]))`: `presence_http_requests_total{instance=~"$instance",status=~"4..|5.."}`,
		`histogram_quantile(0.99, sum by (le, route) (rate(x_seconds_bucket{route!="/a}b", instance=~"$instance"}[5m])))`:         `x_seconds_bucket{route!="/a}b",instance=~"$instance"}`,
		`max(presence_raft_term{a="1"}) - max(presence_raft_term{a="1"} offset $__range)`:                                         `presence_raft_term{a="1"} presence_raft_term{a="1"}`,
		`count(presence_raft_leader_known{a="b"} == 0) or vector(0)`:                                                              `presence_raft_leader_known{a="b"}`,
		`sum without (instance) (a) / on (job) group_left (x) b * 1e3 + c > bool 2.5`:                                             `a b c`,
		`rate(process_cpu_seconds_total[1m:30s])`:                                                                                 `process_cpu_seconds_total`,
		`topk(5, sum(rate(m{l='q"uote'}[${__interval}])))`:                                                                        `m{l='q"uote'}`,
	} {
		got, err := promqlSelectors(expr)
		if err != nil {
			t.Errorf("%s: %v", expr, err)
			continue
		}
		var parts []string
		for _, s := range got {
			part := s.metric
			if s.matchers != nil {
				part += "{" + strings.Join(s.matchers, ",") + "}"
			}
			parts = append(parts, part)
		}
		if strings.Join(parts, " ") != want {
			t.Errorf("%s: selectors %q, want %q", expr, strings.Join(parts, " "), want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `rate(x[5m`, `x{a="b"`, `x{a="b}`} {
		if got, err := promqlSelectors(bad); err == nil {
			t.Errorf("%s: accepted as %v", bad, got)
		}
	}
}
