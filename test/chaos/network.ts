import { execFileSync, spawnSync } from 'node:child_process';

/** One host of the chaos run: where its agent runs and the address others reach it on. */
export interface Host {
  readonly name: string;
  readonly address: string;
  /** The command that runs `argv` on this host. */
  command(argv: readonly string[]): { file: string; args: string[] };
}

/**
 * The hosts of a chaos run: network namespaces joined by veth pairs to a
 * bridge that carries the servers' address, so a host can be cut off from
 * Redis and PostgreSQL (and every other host) by taking its link down. Where
 * namespaces cannot be made (no root, no iproute2), every host is a process
 * on loopback, and cutting a host off is not possible.
 */
export interface Network {
  readonly mode: 'netns' | 'loopback';
  /** The address the servers listen on, as the hosts reach it. */
  readonly serverAddress: string;
  readonly hosts: readonly Host[];
  /** Why namespaces could not be made, in loopback mode. */
  readonly fallbackReason?: string;
  cut(host: Host): void;
  heal(host: Host): void;
  destroy(): void;
}

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: 'pipe' });

function names(slot: number, count: number) {
  const hosts = Array.from({ length: count }, (_, i) => ({
    ns: `sfc${slot}h${i + 1}`,
    outer: `sfc${slot}h${i + 1}o`,
    inner: `sfc${slot}h${i + 1}i`,
    address: `10.213.${slot}.${11 + i}`,
  }));
  return { bridge: `sfc${slot}br`, gateway: `10.213.${slot}.1`, hosts };
}

/** Removes what an earlier run in this slot left (a run killed before it cleaned up). */
function clear(slot: number, count: number): void {
  const n = names(slot, count);
  for (const h of n.hosts) spawnSync('ip', ['netns', 'del', h.ns], { stdio: 'ignore' });
  spawnSync('ip', ['link', 'del', n.bridge], { stdio: 'ignore' });
}

function namespaces(slot: number, hostNames: readonly string[]): Network {
  clear(slot, hostNames.length);
  const n = names(slot, hostNames.length);
  try {
    ip('link', 'add', n.bridge, 'type', 'bridge');
    ip('addr', 'add', `${n.gateway}/24`, 'dev', n.bridge);
    ip('link', 'set', n.bridge, 'up');
    for (const h of n.hosts) {
      ip('netns', 'add', h.ns);
      ip('link', 'add', h.outer, 'type', 'veth', 'peer', 'name', h.inner);
      ip('link', 'set', h.inner, 'netns', h.ns);
      ip('link', 'set', h.outer, 'master', n.bridge);
      ip('link', 'set', h.outer, 'up');
      ip('-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', h.inner);
      ip('-n', h.ns, 'link', 'set', h.inner, 'up');
      ip('-n', h.ns, 'link', 'set', 'lo', 'up');
    }
  } catch (error) {
    clear(slot, hostNames.length);
    throw error;
  }
  const hosts = n.hosts.map((h, i) => ({
    name: hostNames[i] as string,
    address: h.address,
    outer: h.outer,
    command: (argv: readonly string[]) => ({ file: 'ip', args: ['netns', 'exec', h.ns, ...argv] }),
  }));
  const outerOf = (host: Host) => (hosts.find((h) => h.name === host.name) as (typeof hosts)[number]).outer;
  return {
    mode: 'netns',
    serverAddress: n.gateway,
    hosts,
    cut: (host) => ip('link', 'set', outerOf(host), 'down'),
    heal: (host) => ip('link', 'set', outerOf(host), 'up'),
    destroy: () => clear(slot, hostNames.length),
  };
}

function loopback(hostNames: readonly string[], reason: string): Network {
  return {
    mode: 'loopback',
    serverAddress: '127.0.0.1',
    fallbackReason: reason,
    hosts: hostNames.map((name) => ({
      name,
      address: '127.0.0.1',
      command: (argv: readonly string[]) => ({ file: argv[0] as string, args: argv.slice(1) }),
    })),
    cut: () => {
      throw new Error('hosts on loopback cannot be cut off');
    },
    heal: () => {},
    destroy: () => {},
  };
}

/** Namespaces where this process may make them, loopback otherwise. `slot` (0-249) keeps concurrent runs apart. */
export function makeNetwork(hostNames: readonly string[], slot: number, wanted: 'auto' | 'loopback' = 'auto'): Network {
  if (wanted === 'loopback') return loopback(hostNames, 'loopback was asked for');
  try {
    return namespaces(slot, hostNames);
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
    return loopback(hostNames, `network namespaces could not be made: ${stderr || (error as Error).message}`);
  }
}
