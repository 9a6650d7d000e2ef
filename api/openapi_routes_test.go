package api

import (
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"

	"github.com/gorilla/mux"
)

// documentedOperation is one method and path template of the document, with
// a concrete path (parameters filled in) to match against the router.
type documentedOperation struct {
	method, path, sample string
}

// routeCoverage compares the routes of r with the documented operations
// and returns one message per difference, naming the route and where it is
// missing. A documented path that only a catch-all route (PathPrefix, the
// dev demo) serves counts as served when that route does not answer it 404;
// serve sends such a request and returns the status.
func routeCoverage(r *mux.Router, documented []documentedOperation, serve func(method, path string) int) []string {
	served := map[string]string{} // "METHOD {normalised path}" -> "METHOD template"
	anyMethod := map[string]string{}
	var problems []string
	err := r.Walk(func(route *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := route.GetPathTemplate()
		if err != nil {
			problems = append(problems, fmt.Sprintf("a route of api's router has no path template (%v): give it a path and document it in %s", err, openAPIFile))
			return nil
		}
		methods, err := route.GetMethods()
		if err != nil {
			anyMethod[normalisePath(tpl)] = tpl
			return nil
		}
		for _, m := range methods {
			served[m+" "+normalisePath(tpl)] = m + " " + tpl
		}
		return nil
	})
	if err != nil {
		return append(problems, fmt.Sprintf("walking api's router: %v", err))
	}
	docKeys := map[string]documentedOperation{}
	docPaths := map[string]bool{}
	for _, op := range documented {
		docKeys[op.method+" "+normalisePath(op.path)] = op
		docPaths[normalisePath(op.path)] = true
	}
	for _, key := range slices.Sorted(maps.Keys(served)) {
		if _, ok := docKeys[key]; ok {
			continue
		}
		method, tpl, _ := strings.Cut(served[key], " ")
		problems = append(problems, fmt.Sprintf("%s %s is served by api's router (api/api.go) but missing from %s: add paths[%q].%s",
			method, tpl, openAPIFile, tpl, strings.ToLower(method)))
	}
	for _, norm := range slices.Sorted(maps.Keys(anyMethod)) {
		if !docPaths[norm] {
			problems = append(problems, fmt.Sprintf("%s (any method) is served by api's router (api/api.go) but missing from %s: add paths[%q] with the methods it serves",
				anyMethod[norm], openAPIFile, anyMethod[norm]))
		}
	}
	for _, key := range slices.Sorted(maps.Keys(docKeys)) {
		op := docKeys[key]
		if _, ok := served[key]; ok || anyMethod[normalisePath(op.path)] != "" {
			continue
		}
		if problem := catchAllServes(r, op, serve); problem != "" {
			problems = append(problems, problem)
		}
	}
	return problems
}

// catchAllServes accepts a documented operation that a prefix route serves
// without a 404, and explains why anything else is not served.
func catchAllServes(r *mux.Router, op documentedOperation, serve func(method, path string) int) string {
	notServed := fmt.Sprintf("%s %s is documented in %s but api's router serves no such route: register it in api/api.go or remove paths[%q].%s",
		op.method, op.path, openAPIFile, op.path, strings.ToLower(op.method))
	var m mux.RouteMatch
	if !r.Match(httptest.NewRequest(op.method, op.sample, nil), &m) || m.MatchErr != nil || m.Route == nil {
		return notServed
	}
	re, err := m.Route.GetPathRegexp()
	if err != nil || strings.HasSuffix(re, "$") {
		return notServed // an exact route of another template (cannot happen for a normalised match)
	}
	if status := serve(op.method, op.sample); status == 404 {
		tpl, _ := m.Route.GetPathTemplate()
		return fmt.Sprintf("%s %s is documented in %s but only the catch-all route %q matches it, and it answers 404: serve the file or remove paths[%q].%s",
			op.method, op.path, openAPIFile, tpl, op.path, strings.ToLower(op.method))
	}
	return ""
}

// normalisePath replaces every path variable of a template, "{name}" or
// gorilla's "{name:pattern}", with "{}": the document and the router may
// name them differently.
func normalisePath(tpl string) string {
	var b strings.Builder
	depth := 0
	for _, c := range tpl {
		switch {
		case c == '{':
			if depth == 0 {
				b.WriteString("{}")
			}
			depth++
		case c == '}' && depth > 0:
			depth--
		case depth == 0:
			b.WriteRune(c)
		}
	}
	return b.String()
}
