"""``redis``: an in-memory RESP2 server on 6379 that ``redis-cli`` and client libraries accept.

Strings, counters, expiry, lists, hashes, sets, MULTI/EXEC, SELECT, INFO (``redis_version`` from
the image tag), AUTH/``--requirepass`` and the connection chatter clients send (COMMAND, CLIENT,
HELLO). Logs the real server's start-up and shutdown lines; SIGTERM exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable

from agents.worker.images.programs import _net

Value = bytes | list[bytes] | dict[bytes, bytes] | set[bytes]

WRONGTYPE = b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
NOT_INT = b"-ERR value is not an integer or out of range\r\n"
SYNTAX = b"-ERR syntax error\r\n"
OK = b"+OK\r\n"
NIL = b"$-1\r\n"


class Reply(Exception):
    """An error reply raised from deep inside a command."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.data = data


def bulk(v: bytes | None) -> bytes:
    return NIL if v is None else b"$%d\r\n%s\r\n" % (len(v), v)


def integer(n: int) -> bytes:
    return b":%d\r\n" % n


def array(items: list[bytes] | None) -> bytes:
    """An array of bulk strings."""
    if items is None:
        return b"*-1\r\n"
    return b"*%d\r\n" % len(items) + b"".join(bulk(i) for i in items)


def raw_array(encoded: list[bytes]) -> bytes:
    """An array whose elements are already encoded replies."""
    return b"*%d\r\n" % len(encoded) + b"".join(encoded)


def err(msg: str) -> bytes:
    return b"-" + msg.encode() + b"\r\n"


def to_int(v: bytes) -> int:
    try:
        return int(v)
    except ValueError:
        raise Reply(NOT_INT) from None


def _log_ts() -> str:
    now = time.time()
    return time.strftime("%d %b %Y %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


class Redis:
    """The keyspace (16 databases with expiry) and the command table."""

    def __init__(self, version: str, port: int, password: str | None) -> None:
        self.version = version
        self.port = port
        self.password = password
        self.dbs: list[dict[bytes, Value]] = [{} for _ in range(16)]
        self.expires: list[dict[bytes, float]] = [{} for _ in range(16)]
        self.lock = threading.Lock()
        self.started = time.time()
        self.pid = os.getpid()
        self.run_id = os.urandom(20).hex()
        self.clients = 0
        self.next_client = 0
        self.commands_processed = 0
        self.connections_received = 0
        self.commands: dict[bytes, Callable[[Conn, list[bytes]], bytes]] = {}
        for name in dir(self):
            if name.startswith("cmd_"):
                self.commands[name[4:].encode()] = getattr(self, name)

    def log(self, msg: str, level: str = "*", role: str = "M") -> None:
        _net.out(f"{self.pid}:{role} {_log_ts()} {level} {msg}")

    # ---- keyspace helpers

    def get(self, c: Conn, key: bytes) -> Value | None:
        db, exp = self.dbs[c.db], self.expires[c.db]
        deadline = exp.get(key)
        if deadline is not None and deadline <= time.time():
            db.pop(key, None)
            exp.pop(key, None)
        return db.get(key)

    def get_typed(self, c: Conn, key: bytes, kind: type) -> Value | None:
        v = self.get(c, key)
        if v is not None and not isinstance(v, kind):
            raise Reply(WRONGTYPE)
        return v

    def delete(self, c: Conn, key: bytes) -> bool:
        found = self.get(c, key) is not None
        self.dbs[c.db].pop(key, None)
        self.expires[c.db].pop(key, None)
        return found

    def put(self, c: Conn, key: bytes, value: Value, keep_ttl: bool = False) -> None:
        self.dbs[c.db][key] = value
        if not keep_ttl:
            self.expires[c.db].pop(key, None)

    def keys(self, c: Conn) -> list[bytes]:
        return [k for k in list(self.dbs[c.db]) if self.get(c, k) is not None]

    # ---- dispatch

    def execute(self, c: Conn, args: list[bytes]) -> bytes:
        name = args[0].lower()
        self.commands_processed += 1
        if c.multi is not None and name not in (b"exec", b"discard", b"multi", b"quit", b"watch"):
            if name not in self.commands:
                c.multi_error = True
                return self.unknown(args)
            c.multi.append(args)
            return b"+QUEUED\r\n"
        if self.password is not None and not c.authed and name not in (b"auth", b"hello", b"quit"):
            return b"-NOAUTH Authentication required.\r\n"
        fn = self.commands.get(name)
        if fn is None:
            return self.unknown(args)
        try:
            with self.lock:
                return fn(c, args)
        except Reply as r:
            return r.data
        except IndexError:
            return err(f"ERR wrong number of arguments for '{name.decode(errors='replace')}' command")

    @staticmethod
    def unknown(args: list[bytes]) -> bytes:
        rest = "".join(f"'{a.decode(errors='replace')[:128]}' " for a in args[1:])
        return err(f"ERR unknown command '{args[0].decode(errors='replace')[:128]}', with args beginning with: {rest}")

    @staticmethod
    def arity(args: list[bytes], n: int, exact: bool = True) -> None:
        if (len(args) != n) if exact else (len(args) < n):
            raise IndexError

    # ---- connection

    def cmd_ping(self, c: Conn, a: list[bytes]) -> bytes:
        if len(a) > 2:
            raise IndexError
        return bulk(a[1]) if len(a) == 2 else b"+PONG\r\n"

    def cmd_echo(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return bulk(a[1])

    def cmd_quit(self, c: Conn, a: list[bytes]) -> bytes:
        c.closing = True
        return OK

    def cmd_select(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        n = to_int(a[1])
        if not 0 <= n < 16:
            return b"-ERR DB index is out of range\r\n"
        c.db = n
        return OK

    def cmd_auth(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2, exact=False)
        if len(a) > 3:
            return SYNTAX
        if self.password is None:
            return err(
                "ERR AUTH <password> called without any password configured for the default user. "
                "Are you sure your configuration is correct?"
            )
        user = a[1] if len(a) == 3 else b"default"
        if user == b"default" and a[-1].decode(errors="replace") == self.password:
            c.authed = True
            return OK
        return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"

    def cmd_hello(self, c: Conn, a: list[bytes]) -> bytes:
        if len(a) > 1 and a[1] not in (b"2",):
            if a[1].isdigit():
                return b"-NOPROTO sorry, this protocol version is not supported.\r\n"
            return b"-ERR Protocol version is not an integer or out of range\r\n"
        i = 2
        while i < len(a):
            opt = a[i].lower()
            if opt == b"auth" and i + 2 < len(a):
                if self.password is not None and a[i + 2].decode(errors="replace") != self.password:
                    return b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
                c.authed = True
                i += 3
            elif opt == b"setname" and i + 1 < len(a):
                c.name = a[i + 1]
                i += 2
            else:
                return SYNTAX
        if self.password is not None and not c.authed:
            return b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n"
        return raw_array(
            [
                bulk(b"server"), bulk(b"redis"),
                bulk(b"version"), bulk(self.version.encode()),
                bulk(b"proto"), integer(2),
                bulk(b"id"), integer(c.id),
                bulk(b"mode"), bulk(b"standalone"),
                bulk(b"role"), bulk(b"master"),
                bulk(b"modules"), b"*0\r\n",
            ]
        )

    def cmd_client(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2, exact=False)
        sub = a[1].lower()
        if sub == b"setname":
            self.arity(a, 3)
            c.name = a[2]
            return OK
        if sub == b"getname":
            return bulk(c.name or None)
        if sub == b"id":
            return integer(c.id)
        if sub in (b"info", b"list"):
            line = (
                f"id={c.id} addr={c.addr} laddr=0.0.0.0:{self.port} fd=8 name={c.name.decode(errors='replace')} "
                f"age=0 idle=0 flags=N db={c.db} sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 "
                "multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=1024 events=r cmd=client|info user=default "
                "redir=-1 resp=2 lib-name= lib-ver=\n"
            )
            return bulk(line.encode())
        if sub in (b"setinfo", b"reply", b"no-evict", b"no-touch", b"kill", b"pause", b"unpause", b"tracking"):
            return OK
        return err(f"ERR unknown subcommand '{a[1].decode(errors='replace')}'. Try CLIENT HELP.")

    def cmd_command(self, c: Conn, a: list[bytes]) -> bytes:
        if len(a) == 1:
            return b"*0\r\n"
        sub = a[1].lower()
        if sub == b"count":
            return integer(len(self.commands))
        if sub in (b"info", b"getkeys"):
            return b"*0\r\n"
        # redis-cli treats an error to COMMAND DOCS as "old server" and uses its built-in help.
        return err(f"ERR unknown subcommand '{a[1].decode(errors='replace')}'. Try COMMAND HELP.")

    def cmd_config(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2, exact=False)
        sub = a[1].lower()
        if sub == b"get" and len(a) >= 3:
            known = {
                b"port": str(self.port).encode(),
                b"bind": b"* -::*",
                b"databases": b"16",
                b"maxmemory": b"0",
                b"appendonly": b"no",
                b"save": b"3600 1 300 100 60 10000",
                b"dir": b"/data",
                b"requirepass": (self.password or "").encode(),
                b"protected-mode": b"no",
            }
            out: list[bytes] = []
            for k, v in known.items():
                if any(_glob(p.lower(), k) for p in a[2:]):
                    out += [k, v]
            return array(out)
        if sub in (b"set", b"resetstat", b"rewrite"):
            return OK
        return err(f"ERR unknown subcommand '{a[1].decode(errors='replace')}'. Try CONFIG HELP.")

    def cmd_info(self, c: Conn, a: list[bytes]) -> bytes:
        sections = [s.lower().decode() for s in a[1:]] or ["default"]
        return bulk(self.info(sections).encode())

    def info(self, sections: list[str]) -> str:
        everything = any(s in ("all", "everything", "default") for s in sections)
        uptime = int(time.time() - self.started)
        u = os.uname()
        parts: list[str] = []
        if everything or "server" in sections:
            parts.append(
                "# Server\r\n"
                f"redis_version:{self.version}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\n"
                "redis_build_id:5c1c9b3b2a1b0d3f\r\nredis_mode:standalone\r\n"
                f"os:{u.sysname} {u.release} {u.machine}\r\narch_bits:64\r\nmonotonic_clock:POSIX clock_gettime\r\n"
                "multiplexing_api:epoll\r\natomicvar_api:c11-builtin\r\ngcc_version:12.2.0\r\n"
                f"process_id:{self.pid}\r\nprocess_supervised:no\r\nrun_id:{self.run_id}\r\n"
                f"tcp_port:{self.port}\r\nserver_time_usec:{int(time.time() * 1e6)}\r\n"
                f"uptime_in_seconds:{uptime}\r\nuptime_in_days:{uptime // 86400}\r\nhz:10\r\n"
                "configured_hz:10\r\nlru_clock:0\r\nexecutable:/data/redis-server\r\nconfig_file:\r\nio_threads_active:0\r\n"
            )
        if everything or "clients" in sections:
            parts.append(f"# Clients\r\nconnected_clients:{self.clients}\r\nblocked_clients:0\r\n")
        if everything or "memory" in sections:
            parts.append("# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:0\r\nmaxmemory_policy:noeviction\r\n")
        if everything or "persistence" in sections:
            parts.append("# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:0\r\naof_enabled:0\r\n")
        if everything or "stats" in sections:
            parts.append(
                f"# Stats\r\ntotal_connections_received:{self.connections_received}\r\n"
                f"total_commands_processed:{self.commands_processed}\r\n"
            )
        if everything or "replication" in sections:
            parts.append("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n")
        if everything or "keyspace" in sections:
            lines = ["# Keyspace"]
            now = time.time()
            for i, db in enumerate(self.dbs):
                live = [k for k in db if self.expires[i].get(k, now + 1) > now]
                if live:
                    exp = sum(1 for k in live if k in self.expires[i])
                    lines.append(f"db{i}:keys={len(live)},expires={exp},avg_ttl=0")
            parts.append("\r\n".join(lines) + "\r\n")
        return "\r\n".join(parts)

    def cmd_dbsize(self, c: Conn, a: list[bytes]) -> bytes:
        return integer(len(self.keys(c)))

    def cmd_flushdb(self, c: Conn, a: list[bytes]) -> bytes:
        self.dbs[c.db].clear()
        self.expires[c.db].clear()
        return OK

    def cmd_flushall(self, c: Conn, a: list[bytes]) -> bytes:
        for db, exp in zip(self.dbs, self.expires, strict=True):
            db.clear()
            exp.clear()
        return OK

    def cmd_time(self, c: Conn, a: list[bytes]) -> bytes:
        now = time.time()
        return array([str(int(now)).encode(), str(int(now % 1 * 1e6)).encode()])

    def cmd_save(self, c: Conn, a: list[bytes]) -> bytes:
        return OK

    def cmd_bgsave(self, c: Conn, a: list[bytes]) -> bytes:
        return b"+Background saving started\r\n"

    def cmd_lastsave(self, c: Conn, a: list[bytes]) -> bytes:
        return integer(int(self.started))

    def cmd_shutdown(self, c: Conn, a: list[bytes]) -> bytes:
        os.kill(os.getpid(), signal.SIGTERM)
        c.closing = True
        return b""

    # ---- transactions

    def cmd_multi(self, c: Conn, a: list[bytes]) -> bytes:
        if c.multi is not None:
            return b"-ERR MULTI calls can not be nested\r\n"
        c.multi, c.multi_error = [], False
        return OK

    def cmd_discard(self, c: Conn, a: list[bytes]) -> bytes:
        if c.multi is None:
            return b"-ERR DISCARD without MULTI\r\n"
        c.multi = None
        return OK

    def cmd_exec(self, c: Conn, a: list[bytes]) -> bytes:
        if c.multi is None:
            return b"-ERR EXEC without MULTI\r\n"
        queued, failed = c.multi, c.multi_error
        c.multi = None
        if failed:
            return b"-EXECABORT Transaction discarded because of previous errors.\r\n"
        out = []
        for args in queued:
            try:
                out.append(self.commands[args[0].lower()](c, args))
            except Reply as r:
                out.append(r.data)
            except IndexError:
                out.append(err(f"ERR wrong number of arguments for '{args[0].lower().decode()}' command"))
        return raw_array(out)

    def cmd_watch(self, c: Conn, a: list[bytes]) -> bytes:
        return OK

    def cmd_unwatch(self, c: Conn, a: list[bytes]) -> bytes:
        return OK

    # ---- keys

    def cmd_del(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2, exact=False)
        return integer(sum(self.delete(c, k) for k in a[1:]))

    cmd_unlink = cmd_del

    def cmd_exists(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2, exact=False)
        return integer(sum(self.get(c, k) is not None for k in a[1:]))

    def cmd_keys(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return array([k for k in self.keys(c) if _glob(a[1], k)])

    def cmd_scan(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2, exact=False)
        pattern = b"*"
        for i in range(2, len(a) - 1):
            if a[i].lower() == b"match":
                pattern = a[i + 1]
        return raw_array([bulk(b"0"), array([k for k in self.keys(c) if _glob(pattern, k)])])

    def cmd_type(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        v = self.get(c, a[1])
        kinds = {bytes: "string", list: "list", dict: "hash", set: "set"}
        return f"+{kinds[type(v)] if v is not None else 'none'}\r\n".encode()

    def cmd_rename(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        v = self.get(c, a[1])
        if v is None:
            return b"-ERR no such key\r\n"
        deadline = self.expires[c.db].get(a[1])
        self.delete(c, a[1])
        self.put(c, a[2], v)
        if deadline is not None:
            self.expires[c.db][a[2]] = deadline
        return OK

    def _expire(self, c: Conn, key: bytes, seconds: float) -> bytes:
        if self.get(c, key) is None:
            return integer(0)
        if seconds <= 0:
            self.delete(c, key)
        else:
            self.expires[c.db][key] = time.time() + seconds
        return integer(1)

    def cmd_expire(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        return self._expire(c, a[1], to_int(a[2]))

    def cmd_pexpire(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        return self._expire(c, a[1], to_int(a[2]) / 1000)

    def cmd_ttl(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        if self.get(c, a[1]) is None:
            return integer(-2)
        deadline = self.expires[c.db].get(a[1])
        return integer(-1 if deadline is None else round(deadline - time.time()))

    def cmd_pttl(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        if self.get(c, a[1]) is None:
            return integer(-2)
        deadline = self.expires[c.db].get(a[1])
        return integer(-1 if deadline is None else int((deadline - time.time()) * 1000))

    def cmd_persist(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return integer(1 if self.get(c, a[1]) is not None and self.expires[c.db].pop(a[1], None) is not None else 0)

    # ---- strings

    def cmd_get(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return bulk(self.get_typed(c, a[1], bytes))  # type: ignore[arg-type]

    def cmd_set(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        key, value = a[1], a[2]
        ttl: float | None = None
        nx = xx = get = keep = False
        i = 3
        while i < len(a):
            opt = a[i].lower()
            if opt in (b"ex", b"px", b"exat", b"pxat") and i + 1 < len(a):
                n = to_int(a[i + 1])
                if n <= 0:
                    return b"-ERR invalid expire time in 'set' command\r\n"
                ttl = {b"ex": n, b"px": n / 1000, b"exat": n - time.time(), b"pxat": n / 1000 - time.time()}[opt]
                i += 2
                continue
            if opt == b"nx":
                nx = True
            elif opt == b"xx":
                xx = True
            elif opt == b"get":
                get = True
            elif opt == b"keepttl":
                keep = True
            else:
                return SYNTAX
            i += 1
        old = self.get_typed(c, key, bytes) if get else self.get(c, key)
        if (nx and old is not None) or (xx and old is None):
            return bulk(old) if get else NIL  # type: ignore[arg-type]
        self.put(c, key, value, keep_ttl=keep)
        if ttl is not None:
            self.expires[c.db][key] = time.time() + ttl
        return bulk(old) if get else OK  # type: ignore[arg-type]

    def cmd_setnx(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        if self.get(c, a[1]) is not None:
            return integer(0)
        self.put(c, a[1], a[2])
        return integer(1)

    def cmd_setex(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 4)
        n = to_int(a[2])
        if n <= 0:
            return b"-ERR invalid expire time in 'setex' command\r\n"
        self.put(c, a[1], a[3])
        self.expires[c.db][a[1]] = time.time() + n
        return OK

    def cmd_getset(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        old = self.get_typed(c, a[1], bytes)
        self.put(c, a[1], a[2])
        return bulk(old)  # type: ignore[arg-type]

    def cmd_mset(self, c: Conn, a: list[bytes]) -> bytes:
        if len(a) < 3 or len(a) % 2 == 0:
            raise IndexError
        for i in range(1, len(a), 2):
            self.put(c, a[i], a[i + 1])
        return OK

    def cmd_mget(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2, exact=False)
        vals = [self.get(c, k) for k in a[1:]]
        return array([v if isinstance(v, bytes) else None for v in vals])  # type: ignore[misc]

    def _incr(self, c: Conn, key: bytes, by: int) -> bytes:
        old = self.get_typed(c, key, bytes)
        n = to_int(old) if old is not None else 0  # type: ignore[arg-type]
        n += by
        if not -(2**63) <= n < 2**63:
            return b"-ERR increment or decrement would overflow\r\n"
        self.put(c, key, str(n).encode(), keep_ttl=True)
        return integer(n)

    def cmd_incr(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return self._incr(c, a[1], 1)

    def cmd_decr(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return self._incr(c, a[1], -1)

    def cmd_incrby(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        return self._incr(c, a[1], to_int(a[2]))

    def cmd_decrby(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        return self._incr(c, a[1], -to_int(a[2]))

    def cmd_incrbyfloat(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        old = self.get_typed(c, a[1], bytes)
        try:
            n = float(old or b"0") + float(a[2])  # type: ignore[arg-type]
        except ValueError:
            return b"-ERR value is not a valid float\r\n"
        text = repr(n).removesuffix(".0").encode()
        self.put(c, a[1], text, keep_ttl=True)
        return bulk(text)

    def cmd_append(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        old = self.get_typed(c, a[1], bytes) or b""
        new = old + a[2]  # type: ignore[operator]
        self.put(c, a[1], new, keep_ttl=True)
        return integer(len(new))

    def cmd_strlen(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return integer(len(self.get_typed(c, a[1], bytes) or b""))

    # ---- lists

    def _list(self, c: Conn, key: bytes, create: bool = False) -> list[bytes] | None:
        v = self.get_typed(c, key, list)
        if v is None and create:
            v = []
            self.put(c, key, v)
        return v  # type: ignore[return-value]

    def cmd_lpush(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        lst = self._list(c, a[1], create=True)
        assert lst is not None
        for v in a[2:]:
            lst.insert(0, v)
        return integer(len(lst))

    def cmd_rpush(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        lst = self._list(c, a[1], create=True)
        assert lst is not None
        lst.extend(a[2:])
        return integer(len(lst))

    def _pop(self, c: Conn, a: list[bytes], left: bool) -> bytes:
        self.arity(a, 2, exact=False)
        lst = self._list(c, a[1])
        count = to_int(a[2]) if len(a) > 2 else None
        if not lst:
            return array(None) if count is not None else NIL
        n = 1 if count is None else count
        taken = [lst.pop(0 if left else -1) for _ in range(min(n, len(lst)))]
        if not lst:
            self.delete(c, a[1])
        return bulk(taken[0]) if count is None else array(taken)

    def cmd_lpop(self, c: Conn, a: list[bytes]) -> bytes:
        return self._pop(c, a, left=True)

    def cmd_rpop(self, c: Conn, a: list[bytes]) -> bytes:
        return self._pop(c, a, left=False)

    def cmd_llen(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return integer(len(self._list(c, a[1]) or []))

    def cmd_lrange(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 4)
        lst = self._list(c, a[1]) or []
        start, stop = to_int(a[2]), to_int(a[3])
        n = len(lst)
        start = max(start + n, 0) if start < 0 else start
        stop = stop + n if stop < 0 else min(stop, n - 1)
        return array(lst[start : stop + 1] if start <= stop else [])

    def cmd_lindex(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        lst = self._list(c, a[1]) or []
        i = to_int(a[2])
        return bulk(lst[i]) if -len(lst) <= i < len(lst) else NIL

    # ---- hashes

    def _hash(self, c: Conn, key: bytes, create: bool = False) -> dict[bytes, bytes] | None:
        v = self.get_typed(c, key, dict)
        if v is None and create:
            v = {}
            self.put(c, key, v)
        return v  # type: ignore[return-value]

    def cmd_hset(self, c: Conn, a: list[bytes]) -> bytes:
        if len(a) < 4 or len(a) % 2:
            raise IndexError
        h = self._hash(c, a[1], create=True)
        assert h is not None
        added = 0
        for i in range(2, len(a), 2):
            added += a[i] not in h
            h[a[i]] = a[i + 1]
        return integer(added)

    def cmd_hmset(self, c: Conn, a: list[bytes]) -> bytes:
        self.cmd_hset(c, a)
        return OK

    def cmd_hget(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        return bulk((self._hash(c, a[1]) or {}).get(a[2]))

    def cmd_hmget(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        h = self._hash(c, a[1]) or {}
        return array([h.get(f) for f in a[2:]])  # type: ignore[misc]

    def cmd_hgetall(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        h = self._hash(c, a[1]) or {}
        return array([x for kv in h.items() for x in kv])

    def cmd_hkeys(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return array(list(self._hash(c, a[1]) or {}))

    def cmd_hvals(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return array(list((self._hash(c, a[1]) or {}).values()))

    def cmd_hlen(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return integer(len(self._hash(c, a[1]) or {}))

    def cmd_hexists(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        return integer(int(a[2] in (self._hash(c, a[1]) or {})))

    def cmd_hdel(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        h = self._hash(c, a[1]) or {}
        n = sum(h.pop(f, None) is not None for f in a[2:])
        if not h:
            self.delete(c, a[1])
        return integer(n)

    def cmd_hincrby(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 4)
        h = self._hash(c, a[1], create=True)
        assert h is not None
        n = to_int(h.get(a[2], b"0")) + to_int(a[3])
        h[a[2]] = str(n).encode()
        return integer(n)

    # ---- sets

    def _set(self, c: Conn, key: bytes, create: bool = False) -> set[bytes] | None:
        v = self.get_typed(c, key, set)
        if v is None and create:
            v = set()
            self.put(c, key, v)
        return v  # type: ignore[return-value]

    def cmd_sadd(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        s = self._set(c, a[1], create=True)
        assert s is not None
        before = len(s)
        s.update(a[2:])
        return integer(len(s) - before)

    def cmd_srem(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3, exact=False)
        s = self._set(c, a[1]) or set()
        n = sum(1 for m in set(a[2:]) if m in s)
        s.difference_update(a[2:])
        if not s:
            self.delete(c, a[1])
        return integer(n)

    def cmd_smembers(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return array(sorted(self._set(c, a[1]) or set()))

    def cmd_sismember(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 3)
        return integer(int(a[2] in (self._set(c, a[1]) or set())))

    def cmd_scard(self, c: Conn, a: list[bytes]) -> bytes:
        self.arity(a, 2)
        return integer(len(self._set(c, a[1]) or set()))


def _glob(pattern: bytes, name: bytes) -> bool:
    if pattern == b"*":
        return True
    import fnmatch

    return fnmatch.fnmatchcase(name.decode("latin-1"), pattern.decode("latin-1"))


class Conn:
    """Per-connection state: selected db, auth, name, a MULTI queue."""

    __slots__ = ("addr", "authed", "closing", "db", "id", "multi", "multi_error", "name")

    def __init__(self, cid: int, addr: str) -> None:
        self.id = cid
        self.addr = addr
        self.db = 0
        self.authed = False
        self.closing = False
        self.name = b""
        self.multi: list[list[bytes]] | None = None
        self.multi_error = False


def read_command(rfile: object) -> list[bytes] | None:
    """One command: a RESP array of bulk strings, or an inline command (``PING`` typed into nc)."""
    line = rfile.readline(65536)  # type: ignore[attr-defined]
    if not line:
        return None
    if line[:1] == b"*":
        n = int(line[1:])
        args = []
        for _ in range(n):
            hdr = rfile.readline(65536)  # type: ignore[attr-defined]
            if hdr[:1] != b"$":
                raise ValueError("expected '$'")
            size = int(hdr[1:])
            data = rfile.read(size + 2)  # type: ignore[attr-defined]
            args.append(data[:size])
        return args
    return _split_inline(line.decode("latin-1").strip())


def _split_inline(text: str) -> list[bytes]:
    out: list[str] = []
    cur, quote, started = "", "", False
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
            else:
                cur += ch
        elif ch in "\"'":
            quote, started = ch, True
        elif ch in " \t":
            if started:
                out.append(cur)
            cur, started = "", False
        else:
            cur += ch
            started = True
    if started:
        out.append(cur)
    return [w.encode("latin-1") for w in out]


def main(argv: list[str], spec: object) -> int:
    """``redis-server [redis.conf] [--port N] [--requirepass PW] [--other-option v]...``."""
    _net.setup_stdio()
    version = getattr(spec, "version", "") or "7.4.1"
    args = argv[1:]
    if args[:1] in (["-v"], ["--version"]):
        _net.out(f"Redis server v={version} sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=5c1c9b3b2a1b0d3f")
        return 0
    opts: dict[str, str] = {}
    i = 0
    while i < len(args):
        if args[i].startswith("--"):
            key = args[i][2:]
            vals = []
            while i + 1 < len(args) and not args[i + 1].startswith("--"):
                vals.append(args[i + 1])
                i += 1
            opts[key] = " ".join(vals)
        i += 1
    port = int(opts.get("port", "6379"))
    server = Redis(version, port, opts.get("requirepass") or None)
    _net.install_signals(signal.SIGTERM, signal.SIGINT)
    pid = server.pid
    server.log("oO0OoO0OoO0Oo Redis is starting oO0OoO0OoO0Oo", role="C")
    server.log(f"Redis version={version}, bits=64, commit=00000000, modified=0, pid={pid}, just started", role="C")
    if (args and not args[0].startswith("--")) or opts:
        server.log("Configuration loaded", role="C")
    else:
        server.log(
            "Warning: no config file specified, using the default config. In order to specify a config file use "
            "redis-server /path/to/redis.conf",
            level="#",
            role="C",
        )
    try:
        sock = _net.listen(_net.port_for(port), backlog=511)
    except OSError as exc:
        server.log(f"Warning: Could not create server TCP listening socket *:{port}: bind: {exc.strerror}", level="#")
        server.log(f"Failed listening on port {port} (tcp), aborting.", level="#")
        return 1
    server.log("monotonic clock: POSIX clock_gettime")
    server.log(f"Running mode=standalone, port={port}.")
    server.log("Server initialized")
    major = int(version.split(".")[0]) if version[:1].isdigit() else 7
    server.log("Ready to accept connections tcp" if major >= 7 else "Ready to accept connections")

    def handle(conn: socket.socket, addr: tuple[str, int]) -> None:
        server.clients += 1
        server.connections_received += 1
        server.next_client += 1
        c = Conn(server.next_client + 2, f"{addr[0]}:{addr[1]}")
        rfile = conn.makefile("rb")
        try:
            while not c.closing:
                try:
                    cmd = read_command(rfile)
                except ValueError:
                    conn.sendall(b"-ERR Protocol error: invalid multibulk length\r\n")
                    return
                if cmd is None:
                    return
                if not cmd:
                    continue
                reply = server.execute(c, cmd)
                if reply:
                    conn.sendall(reply)
        finally:
            server.clients -= 1
            rfile.close()

    stop = _net.serve(sock, handle)
    _net.out(f"{pid}:signal-handler ({int(time.time())}) Received {stop.name} scheduling shutdown...")
    server.log("User requested shutdown...")
    server.log("Saving the final RDB snapshot before exiting.")
    server.log("DB saved on disk")
    server.log("Removing the pid file.")
    server.log("Redis is now ready to exit, bye bye...", level="#")
    sock.close()
    return 0
