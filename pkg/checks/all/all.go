// Package all lists every check this binary has, one line each.
package all

import (
	"github.com/nodeguard/nodeguard/pkg/checks"
	"github.com/nodeguard/nodeguard/pkg/checks/cri"
	"github.com/nodeguard/nodeguard/pkg/checks/disk"
	"github.com/nodeguard/nodeguard/pkg/checks/dns"
	"github.com/nodeguard/nodeguard/pkg/checks/journald"
	"github.com/nodeguard/nodeguard/pkg/checks/kmsg"
	"github.com/nodeguard/nodeguard/pkg/checks/kubelet"
	"github.com/nodeguard/nodeguard/pkg/checks/lease"
	"github.com/nodeguard/nodeguard/pkg/checks/memcg"
	"github.com/nodeguard/nodeguard/pkg/checks/nic"
	"github.com/nodeguard/nodeguard/pkg/checks/plugins"
	"github.com/nodeguard/nodeguard/pkg/checks/pstore"
)

// Registry is every check, in the order they start.
var Registry = checks.Registry{
	kmsg.Registration,
	pstore.Registration,
	journald.Registration,
	nic.Registration,
	disk.Registration,
	memcg.Registration,
	lease.Registration,
	cri.Registration,
	dns.Registration,
	kubelet.Registration,
	plugins.Registration,
}
