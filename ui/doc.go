// Package ui is reshard's live status page: one read-only page, served from the binary,
// that follows the catalog in etcd and shows the key line, the shards' load, the
// migrations, the history and the partition scheduler's runway (docs/ui.md).
//
// state.go turns what was read from the catalog into the page's model (pure functions),
// feed.go keeps that model current from etcd watches, server.go serves the page, the
// model as JSON (/api/state) and its changes as server-sent events (/api/events). The
// page itself (assets/) is a template and a small script, embedded: no build step, no
// external fetch.
package ui
