"""``mysql``: the official image's entrypoint rules plus a MySQL-protocol server on 3306.

The root password comes from the same variables as the real image (``MYSQL_ROOT_PASSWORD`` or
its ``_FILE`` twin, e.g. a swarm secret under /run/secrets, ``MYSQL_ALLOW_EMPTY_PASSWORD``,
``MYSQL_RANDOM_ROOT_PASSWORD``), with the image's error text and exit code 1 when none is set.
``MYSQL_DATABASE``/``MYSQL_USER``/``MYSQL_PASSWORD`` create a database and a user as the image does.

A standard client (Debian's ``mysql``, i.e. MariaDB's) logs in with mysql_native_password and can
create/drop/show/use databases, create simple tables, insert and select rows, and run the queries
clients send on connect. Data lives in memory: it does not survive the task.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import threading
import time

from agents.worker.images.programs import _net

try:
    from _sha1 import sha1  # the builtin: hashlib would load OpenSSL (+3 MB per task)
except ImportError:  # pragma: no cover
    from hashlib import sha1

TYPE_CHECKING = False  # typing itself costs ~1.5 MB per task; mypy honours this name
if TYPE_CHECKING:
    from typing import Any

    Node = tuple[Any, ...]  # ("lit", v) | ("col", name, table) | ("call", NAME, args) | ...

NATIVE = b"mysql_native_password"
SYSTEM_DBS = ("information_schema", "mysql", "performance_schema", "sys")

# capability flags
LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB = 1, 2, 4, 8
PROTOCOL_41, INTERACTIVE, TRANSACTIONS, SECURE_CONNECTION = 512, 1024, 8192, 32768
MULTI_STATEMENTS, MULTI_RESULTS, PS_MULTI_RESULTS = 1 << 16, 1 << 17, 1 << 18
PLUGIN_AUTH, CONNECT_ATTRS, PLUGIN_AUTH_LENENC = 1 << 19, 1 << 20, 1 << 21
SERVER_CAPS = (
    LONG_PASSWORD | FOUND_ROWS | LONG_FLAG | CONNECT_WITH_DB | 16 | 64 | 256 | PROTOCOL_41 | INTERACTIVE
    | 4096 | TRANSACTIONS | SECURE_CONNECTION | MULTI_STATEMENTS | MULTI_RESULTS | PS_MULTI_RESULTS
    | PLUGIN_AUTH | CONNECT_ATTRS | PLUGIN_AUTH_LENENC | (1 << 22)
)
STATUS_AUTOCOMMIT, STATUS_MORE_RESULTS = 0x0002, 0x0008

T_LONGLONG, T_DOUBLE, T_NULL, T_VAR_STRING = 0x08, 0x05, 0x06, 0xFD


class SQLError(Exception):
    """An ERR packet: MySQL error code, SQLSTATE and message."""

    def __init__(self, code: int, state: str, message: str) -> None:
        super().__init__(message)
        self.code, self.state, self.message = code, state, message


def syntax_error(near: str) -> SQLError:
    return SQLError(
        1064,
        "42000",
        "You have an error in your SQL syntax; check the manual that corresponds to your MySQL server "
        f"version for the right syntax to use near '{near[:80]}' at line 1",
    )


# --------------------------------------------------------------------------- wire helpers


def lenenc_int(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n)
    if n < 1 << 24:
        return b"\xfd" + struct.pack("<I", n)[:3]
    return b"\xfe" + struct.pack("<Q", n)


def lenenc_str(b: bytes) -> bytes:
    return lenenc_int(len(b)) + b


def read_lenenc_int(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 251:
        return first, pos + 1
    if first == 0xFC:
        return struct.unpack_from("<H", data, pos + 1)[0], pos + 3
    if first == 0xFD:
        return int.from_bytes(data[pos + 1 : pos + 4], "little"), pos + 4
    return struct.unpack_from("<Q", data, pos + 1)[0], pos + 9


def scramble_native(password: str, salt: bytes) -> bytes:
    """The token a client sends for mysql_native_password: SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw)))."""
    if not password:
        return b""
    h1 = sha1(password.encode()).digest()
    h2 = sha1(h1).digest()
    h3 = sha1(salt + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3, strict=True))


def new_salt() -> bytes:
    """20 printable, non-NUL bytes like mysqld's scramble."""
    return bytes(33 + b % 94 for b in os.urandom(20))


# --------------------------------------------------------------------------- SQL lexer/evaluator

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
  | (?P<num>\d+\.\d*|\.\d+|\d+)
  | (?P<bq>`(?:[^`]|``)*`)
  | (?P<var>@@?(?:[A-Za-z_][\w.$]*|`[^`]*`))
  | (?P<id>[A-Za-z_$][\w$]*)
  | (?P<op><=>|<=|>=|<>|!=|\|\||&&|[-+*/%(),.=<>;!])
  )""",
    re.VERBOSE,
)


class Tok:
    __slots__ = ("end", "kind", "start", "text", "value")

    def __init__(self, kind: str, text: str, value: object, start: int, end: int) -> None:
        self.kind, self.text, self.value, self.start, self.end = kind, text, value, start, end

    def kw(self, *words: str) -> bool:
        return self.kind == "id" and self.text.upper() in words


def _unquote(s: str) -> str:
    q = s[0]
    body = s[1:-1].replace(q + q, q)
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0", "r": "\r"}.get(m.group(1), m.group(1)), body)


def tokenize(sql: str) -> list[Tok]:
    toks: list[Tok] = []
    pos = 0
    sql = sql.rstrip()
    while pos < len(sql):
        if sql.startswith(("--", "#"), pos) or sql[pos:].lstrip().startswith(("-- ", "#")):
            rest = sql[pos:]
            stripped = rest.lstrip()
            if stripped.startswith(("-- ", "#")):
                nl = sql.find("\n", pos + (len(rest) - len(stripped)))
                pos = len(sql) if nl < 0 else nl + 1
                continue
        if sql[pos:].lstrip().startswith("/*"):
            start = sql.index("/*", pos)
            end = sql.find("*/", start + 2)
            pos = len(sql) if end < 0 else end + 2
            continue
        m = _TOKEN.match(sql, pos)
        if m is None or m.end() == pos:
            if sql[pos:].strip() == "":
                break
            raise syntax_error(sql[pos:].strip())
        kind = m.lastgroup or "op"
        text = m.group(kind)
        value: object = text
        if kind == "str":
            value = _unquote(text)
        elif kind == "num":
            value = float(text) if "." in text else int(text)
        elif kind == "bq":
            kind, value = "id", text[1:-1].replace("``", "`")
            text = str(value)
        toks.append(Tok(kind, text, value, m.start(kind), m.end()))
        pos = m.end()
    return toks


def split_statements(sql: str) -> list[str]:
    """Split on ``;`` outside quotes and comments (CLIENT_MULTI_STATEMENTS)."""
    out, cur, quote, i = [], [], "", 0
    while i < len(sql):
        ch = sql[i]
        if quote:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(sql):
                cur.append(sql[i + 1])
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"`":
            quote = ch
            cur.append(ch)
        elif ch == ";":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    stmts = [s for s in out if s.strip()]
    return stmts or [""]


class Parser:
    """Recursive-descent expressions over a token list (enough for SELECT lists and WHERE)."""

    def __init__(self, toks: list[Tok], sql: str) -> None:
        self.toks, self.sql, self.i = toks, sql, 0

    def peek(self, off: int = 0) -> Tok | None:
        j = self.i + off
        return self.toks[j] if j < len(self.toks) else None

    def next(self) -> Tok:
        t = self.peek()
        if t is None:
            raise syntax_error("")
        self.i += 1
        return t

    def accept(self, *words: str) -> bool:
        t = self.peek()
        if t is not None and (t.kw(*words) or (t.kind == "op" and t.text in words)):
            self.i += 1
            return True
        return False

    def expect(self, *words: str) -> None:
        if not self.accept(*words):
            raise syntax_error(self.rest())

    def rest(self) -> str:
        t = self.peek()
        return self.sql[t.start :] if t is not None else ""

    def ident(self) -> str:
        t = self.next()
        if t.kind != "id":
            raise syntax_error(self.sql[t.start :])
        return str(t.value)

    def name_or_string(self) -> str:
        t = self.next()
        if t.kind not in ("id", "str"):
            raise syntax_error(self.sql[t.start :])
        return str(t.value)

    # expression grammar: or > and > not > comparison > additive > multiplicative > unary > primary
    def expr(self) -> Node:
        left = self.and_expr()
        while self.accept("OR", "||"):
            left = ("or", left, self.and_expr())
        return left

    def and_expr(self) -> Node:
        left = self.not_expr()
        while self.accept("AND", "&&"):
            left = ("and", left, self.not_expr())
        return left

    def not_expr(self) -> Node:
        if self.accept("NOT", "!"):
            return ("not", self.not_expr())
        return self.comparison()

    def comparison(self) -> Node:
        left = self.additive()
        t = self.peek()
        if t is not None and t.kind == "op" and t.text in ("=", "<>", "!=", "<", ">", "<=", ">=", "<=>"):
            self.i += 1
            return ("cmp", t.text, left, self.additive())
        if t is not None and t.kw("IS"):
            self.i += 1
            neg = self.accept("NOT")
            self.expect("NULL")
            return ("isnull", neg, left)
        if t is not None and t.kw("LIKE"):
            self.i += 1
            return ("like", left, self.additive())
        return left

    def additive(self) -> Node:
        left = self.multiplicative()
        while True:
            t = self.peek()
            if t is not None and t.kind == "op" and t.text in "+-" and t.text:
                self.i += 1
                left = ("arith", t.text, left, self.multiplicative())
            else:
                return left

    def multiplicative(self) -> Node:
        left = self.unary()
        while True:
            t = self.peek()
            if t is not None and ((t.kind == "op" and t.text in ("*", "/", "%")) or t.kw("DIV", "MOD")):
                self.i += 1
                left = ("arith", t.text.upper(), left, self.unary())
            else:
                return left

    def unary(self) -> Node:
        if self.accept("-"):
            return ("arith", "-", ("lit", 0), self.unary())
        if self.accept("+"):
            return self.unary()
        return self.primary()

    def primary(self) -> Node:
        t = self.next()
        if t.kind in ("str", "num"):
            return ("lit", t.value)
        if t.kind == "var":
            return ("var", t.text)
        if t.kind == "op" and t.text == "(":
            e = self.expr()
            self.expect(")")
            return e
        if t.kind == "op" and t.text == "*":
            return ("star",)
        if t.kind == "id":
            up = t.text.upper()
            if up == "NULL":
                return ("lit", None)
            if up in ("TRUE", "FALSE"):
                return ("lit", int(up == "TRUE"))
            if up in ("CURRENT_USER", "CURRENT_TIMESTAMP", "CURRENT_DATE", "LOCALTIME", "NOW") and not self._is_call():
                return ("call", up, [])
            if self._is_call():
                self.i += 1
                args: list[Node] = []
                if not self.accept(")"):
                    while True:
                        if self.accept("DISTINCT"):
                            pass
                        args.append(self.expr())
                        if self.accept(")"):
                            break
                        self.expect(",")
                return ("call", up, args)
            if self.accept("."):
                col = self.next()
                return ("col", str(col.value) if col.kind == "id" else col.text, str(t.value))
            return ("col", str(t.value), None)
        raise syntax_error(self.sql[t.start :])

    def _is_call(self) -> bool:
        t = self.peek()
        return t is not None and t.kind == "op" and t.text == "("


# --------------------------------------------------------------------------- server state


class Table:
    __slots__ = ("auto", "columns", "rows", "types")

    def __init__(self, columns: list[str], types: list[str], auto: int | None) -> None:
        self.columns, self.types, self.auto = columns, types, auto
        self.rows: list[list[object]] = []


class Server:
    """Databases, users and sessions of one mysqld."""

    def __init__(self, version: str, root_password: str, port: int) -> None:
        self.version = version
        self.port = port
        self.lock = threading.Lock()
        self.dbs: dict[str, dict[str, Table]] = {name: {} for name in SYSTEM_DBS}
        self.users: dict[str, str] = {"root": root_password}
        self.grants: dict[str, set[str] | None] = {"root": None}  # None: every database
        self.next_conn = 1
        self.started = time.time()
        self.questions = 0
        major = ".".join(version.split(".")[:2])
        self.comment = "MySQL Community Server (GPL)" if major in ("5.6", "5.7") else "MySQL Community Server - GPL"

    def variables(self) -> dict[str, object]:
        return {
            "version": self.version,
            "version_comment": self.comment,
            "version_compile_os": "Linux",
            "version_compile_machine": "x86_64",
            "hostname": socket.gethostname(),
            "port": self.port,
            "socket": "/var/run/mysqld/mysqld.sock",
            "datadir": "/var/lib/mysql/",
            "basedir": "/usr/",
            "max_allowed_packet": 4194304,
            "max_connections": 151,
            "autocommit": 1,
            "sql_mode": "ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
            "ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION",
            "character_set_client": "utf8",
            "character_set_connection": "utf8",
            "character_set_results": "utf8",
            "character_set_server": "latin1",
            "character_set_database": "latin1",
            "collation_connection": "utf8_general_ci",
            "collation_server": "latin1_swedish_ci",
            "collation_database": "latin1_swedish_ci",
            "tx_isolation": "REPEATABLE-READ",
            "transaction_isolation": "REPEATABLE-READ",
            "tx_read_only": 0,
            "transaction_read_only": 0,
            "time_zone": "SYSTEM",
            "system_time_zone": "UTC",
            "lower_case_table_names": 0,
            "default_storage_engine": "InnoDB",
            "wait_timeout": 28800,
            "interactive_timeout": 28800,
            "net_write_timeout": 60,
            "license": "GPL",
            "server_id": 0,
            "skip_name_resolve": "ON",
            "default_authentication_plugin": "mysql_native_password",
            "have_ssl": "DISABLED",
        }

    def can_use(self, user: str, db: str) -> bool:
        allowed = self.grants.get(user)
        return allowed is None or db.lower() == "information_schema" or db in allowed


class Result:
    """A result set: column names, per-column type (int/float/str) and rows."""

    __slots__ = ("columns", "rows", "types")

    def __init__(self, columns: list[str], rows: list[list[object]], types: list[str] | None = None) -> None:
        self.columns, self.rows = columns, rows
        self.types = types or [_kind([r[i] for r in rows]) for i in range(len(columns))]


def _kind(values: list[object]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, int) for v in present):
        return "int"
    if present and all(isinstance(v, (int, float)) for v in present):
        return "float"
    return "str"


class OkResult:
    __slots__ = ("affected", "info", "insert_id")

    def __init__(self, affected: int = 0, insert_id: int = 0, info: str = "") -> None:
        self.affected, self.insert_id, self.info = affected, insert_id, info


class Session:
    """One client connection: the authenticated user, current database and the SQL it runs."""

    def __init__(self, server: Server, conn_id: int, host: str) -> None:
        self.server, self.id, self.host = server, conn_id, host
        self.user = ""
        self.db: str | None = None
        self.last_insert_id = 0
        self.uservars: dict[str, object] = {}

    def denied_db(self, db: str) -> SQLError:
        return SQLError(1044, "42000", f"Access denied for user '{self.user}'@'%' to database '{db}'")

    def use(self, db: str) -> None:
        if db not in self.server.dbs:
            raise SQLError(1049, "42000", f"Unknown database '{db}'")
        if not self.server.can_use(self.user, db):
            raise self.denied_db(db)
        self.db = db

    # ---- evaluation

    def eval(self, node: Node, row: dict[str, object] | None = None) -> object:
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "var":
            return self.var(node[1])
        if kind == "col":
            if row is not None and node[1].lower() in row:
                return row[node[1].lower()]
            raise SQLError(1054, "42S22", f"Unknown column '{node[1]}' in 'field list'")
        if kind == "call":
            return self.call(node[1], [self.eval(a, row) for a in node[2] if a[0] != "star"], node[2], row)
        if kind == "arith":
            a, b = self.eval(node[2], row), self.eval(node[3], row)
            if a is None or b is None:
                return None
            x, y = _num(a), _num(b)
            op = node[1]
            if op == "+":
                return x + y
            if op == "-":
                return x - y
            if op == "*":
                return x * y
            if op in ("/",):
                return None if y == 0 else round(x / y, 4)
            if op == "DIV":
                return None if y == 0 else int(x // y)
            return None if y == 0 else x % y
        if kind == "cmp":
            a, b = self.eval(node[2], row), self.eval(node[3], row)
            if node[1] == "<=>":
                return int(a == b)
            if a is None or b is None:
                return None
            if isinstance(a, (int, float)) or isinstance(b, (int, float)):
                a, b = _num(a), _num(b)
            else:
                a, b = str(a).lower(), str(b).lower()
            ops = {"=": a == b, "<>": a != b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}  # type: ignore[operator]
            return int(ops[node[1]])
        if kind == "isnull":
            v = self.eval(node[2], row) is None
            return int(v != node[1])
        if kind == "like":
            import fnmatch

            a, b = self.eval(node[1], row), self.eval(node[2], row)
            if a is None or b is None:
                return None
            pat = str(b).replace("*", "[*]").replace("?", "[?]").replace("%", "*").replace("_", "?")
            return int(fnmatch.fnmatch(str(a).lower(), pat.lower()))
        if kind == "and":
            return int(bool(self.eval(node[1], row)) and bool(self.eval(node[2], row)))
        if kind == "or":
            return int(bool(self.eval(node[1], row)) or bool(self.eval(node[2], row)))
        if kind == "not":
            val = self.eval(node[1], row)
            return None if val is None else int(not val)
        raise syntax_error("*")

    def var(self, name: str) -> object:
        if not name.startswith("@@"):
            return self.uservars.get(name[1:].lower())
        key = name[2:].lower()
        for prefix in ("session.", "global.", "local."):
            key = key.removeprefix(prefix)
        values = self.server.variables()
        if key not in values:
            raise SQLError(1193, "HY000", f"Unknown system variable '{key}'")
        return values[key]

    def call(self, name: str, args: list[object], nodes: list[Node], row: dict[str, object] | None) -> object:
        s = self.server
        if name == "VERSION":
            return s.version
        if name in ("DATABASE", "SCHEMA"):
            return self.db
        if name in ("USER", "SESSION_USER", "SYSTEM_USER"):
            return f"{self.user}@{self.host}"
        if name == "CURRENT_USER":
            return f"{self.user}@%"
        if name in ("NOW", "CURRENT_TIMESTAMP", "LOCALTIME", "SYSDATE"):
            return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        if name in ("CURDATE", "CURRENT_DATE"):
            return time.strftime("%Y-%m-%d", time.gmtime())
        if name == "CONNECTION_ID":
            return self.id
        if name == "LAST_INSERT_ID":
            return self.last_insert_id
        if name == "UUID":
            h = os.urandom(16).hex()
            return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        if name == "CONCAT":
            return None if any(a is None for a in args) else "".join(_text(a) for a in args)
        if name in ("UPPER", "UCASE"):
            return None if args[0] is None else _text(args[0]).upper()
        if name in ("LOWER", "LCASE"):
            return None if args[0] is None else _text(args[0]).lower()
        if name in ("LENGTH", "CHAR_LENGTH"):
            return None if args[0] is None else len(_text(args[0]))
        if name == "IFNULL":
            return args[1] if args[0] is None else args[0]
        if name == "COALESCE":
            return next((a for a in args if a is not None), None)
        if name == "SLEEP":
            time.sleep(min(float(_num(args[0])), 60.0))
            return 0
        if name == "ABS":
            return abs(_num(args[0]))
        if name == "PI":
            return 3.141593
        if name == "RAND":
            return int.from_bytes(os.urandom(4), "big") / 2**32
        raise SQLError(1305, "42000", f"FUNCTION {(self.db or 'mysql')}.{name.lower()} does not exist")


def _num(v: object) -> int | float:
    if isinstance(v, (int, float)):
        return v
    m = re.match(r"\s*[-+]?(\d+\.?\d*|\.\d+)", str(v))
    if not m:
        return 0
    text = m.group(0)
    return float(text) if "." in text else int(text)


def _text(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return f"{v:.4f}".rstrip("0").rstrip(".") if v != int(v) else str(int(v)) if abs(v) < 1e15 else repr(v)
    return str(v)


# --------------------------------------------------------------------------- statements


def execute(sess: Session, sql: str) -> Result | OkResult:
    """Run one statement (under the server lock) and return a result set or an OK."""
    toks = tokenize(sql)
    if not toks:
        raise SQLError(1065, "42000", "Query was empty")
    p = Parser(toks, sql.strip())
    first = toks[0].text.upper()
    with sess.server.lock:
        handler = _STATEMENTS.get(first)
        if handler is None:
            raise syntax_error(sql.strip())
        return handler(sess, p)


def st_select(sess: Session, p: Parser) -> Result | OkResult:
    p.expect("SELECT")
    while p.accept("DISTINCT", "ALL", "SQL_NO_CACHE", "SQL_CALC_FOUND_ROWS", "HIGH_PRIORITY"):
        pass
    items: list[tuple[Node, str]] = []
    while True:
        start_tok = p.peek()
        if start_tok is None:
            raise syntax_error("")
        node = p.expr()
        end = p.toks[p.i - 1].end
        label = p.sql[start_tok.start : end]
        if node[0] == "lit" and start_tok.kind == "str":
            label = str(node[1])
        elif node[0] == "col":
            label = node[1]
        if p.accept("AS"):
            label = p.name_or_string()
        else:
            t = p.peek()
            if t is not None and t.kind in ("id", "str") and not t.kw("FROM", "LIMIT", "WHERE", "ORDER", "GROUP", "INTO"):
                label = str(p.next().value)
        items.append((node, label))
        if not p.accept(","):
            break
    table: Table | None = None
    if p.accept("FROM"):
        db, name = table_name(sess, p)
        if db.lower() == "information_schema" and name.lower() == "schemata":
            table = Table(["SCHEMA_NAME"], ["str"], None)
            table.rows = [[d] for d in visible_dbs(sess)]
        elif name.lower() == "dual":
            table = None
        else:
            table = get_table(sess, db, name)
    where: Node | None = None
    if p.accept("WHERE"):
        where = p.expr()
    order: list[tuple[Node, bool]] = []
    if p.accept("GROUP"):
        p.expect("BY")
        p.expr()
    if p.accept("ORDER"):
        p.expect("BY")
        while True:
            key = p.expr()
            desc = p.accept("DESC")
            p.accept("ASC")
            order.append((key, desc))
            if not p.accept(","):
                break
    limit: int | None = None
    limit_range: tuple[int, int] | None
    if p.accept("LIMIT"):
        n = p.next()
        limit = int(n.value) if isinstance(n.value, int) else None
        if p.accept(","):
            off, count = limit or 0, p.next().value
            limit = None
            limit_range = (off, int(count))  # type: ignore[call-overload]
        else:
            limit_range = (0, limit) if limit is not None else None
            if p.accept("OFFSET"):
                off = int(p.next().value)  # type: ignore[call-overload]
                limit_range = (off, (limit or 0))
    else:
        limit_range = None
    p.accept(";")
    if p.peek() is not None:
        raise syntax_error(p.rest())
    if table is None:
        row = [sess.eval(n) for n, _ in items]
        keep = where is None or bool(sess.eval(where))
        rows = [row] if keep and (limit_range is None or limit_range[1] > 0) else []
        return Result([label for _, label in items], rows)
    env_rows = [dict(zip([c.lower() for c in table.columns], r, strict=True)) for r in table.rows]
    if where is not None:
        env_rows = [r for r in env_rows if sess.eval(where, r)]
    for key, desc in reversed(order):
        env_rows.sort(key=lambda r, k=key: (sess.eval(k, r) is not None, sess.eval(k, r)), reverse=desc)  # type: ignore[misc]
    aggregate = any(n[0] == "call" and n[1] == "COUNT" for n, _ in items)
    if aggregate:
        out_row: list[object] = [len(env_rows) if n[0] == "call" and n[1] == "COUNT" else None for n, _ in items]
        return Result([label for _, label in items], [out_row])
    columns: list[str] = []
    getters: list[Node] = []
    for node, label in items:
        if node[0] == "star":
            columns.extend(table.columns)
            getters.extend(("col", c, None) for c in table.columns)
        else:
            columns.append(label)
            getters.append(node)
    if limit_range is not None:
        env_rows = env_rows[limit_range[0] : limit_range[0] + limit_range[1]]
    rows = [[sess.eval(g, r) for g in getters] for r in env_rows]
    types = []
    for g in getters:
        if g[0] == "col" and g[1] in table.columns:
            types.append(table.types[table.columns.index(g[1])])
        else:
            types.append("")
    result = Result(columns, rows)
    result.types = [t or result.types[i] for i, t in enumerate(types)]
    return result


def table_name(sess: Session, p: Parser) -> tuple[str, str]:
    name = p.ident()
    if p.accept("."):
        return name, p.ident()
    if sess.db is None:
        raise SQLError(1046, "3D000", "No database selected")
    return sess.db, name


def get_table(sess: Session, db: str, name: str) -> Table:
    if db not in sess.server.dbs:
        raise SQLError(1049, "42000", f"Unknown database '{db}'")
    if not sess.server.can_use(sess.user, db):
        raise sess.denied_db(db)
    table = sess.server.dbs[db].get(name)
    if table is None:
        raise SQLError(1146, "42S02", f"Table '{db}.{name}' doesn't exist")
    return table


def visible_dbs(sess: Session) -> list[str]:
    return sorted(d for d in sess.server.dbs if sess.server.can_use(sess.user, d))


def _like_filter(sess: Session, p: Parser, names: list[str]) -> list[str]:
    if p.accept("LIKE"):
        pat = p.next().value
        return [n for n in names if sess.eval(("like", ("lit", n), ("lit", pat)))]
    if p.accept("WHERE"):
        p.expr()
    return names


def st_show(sess: Session, p: Parser) -> Result:
    p.expect("SHOW")
    p.accept("FULL", "GLOBAL", "SESSION")
    t = p.next()
    word = t.text.upper()
    if word in ("DATABASES", "SCHEMAS"):
        return Result(["Database"], [[d] for d in _like_filter(sess, p, visible_dbs(sess))], ["str"])
    if word == "TABLES":
        db = sess.db
        if p.accept("FROM", "IN"):
            db = p.ident()
        if db is None:
            raise SQLError(1046, "3D000", "No database selected")
        if db not in sess.server.dbs:
            raise SQLError(1049, "42000", f"Unknown database '{db}'")
        names = _like_filter(sess, p, sorted(sess.server.dbs[db]))
        return Result([f"Tables_in_{db}"], [[n] for n in names], ["str"])
    if word == "VARIABLES":
        values = sess.server.variables()
        names = _like_filter(sess, p, sorted(values))
        return Result(["Variable_name", "Value"], [[n, _text(values[n])] for n in names], ["str", "str"])
    if word == "STATUS":
        values = {"Uptime": int(time.time() - sess.server.started), "Threads_connected": 1,
                  "Questions": sess.server.questions}
        names = _like_filter(sess, p, sorted(values))
        return Result(["Variable_name", "Value"], [[n, str(values[n])] for n in names], ["str", "str"])
    if word in ("WARNINGS", "ERRORS"):
        return Result(["Level", "Code", "Message"], [], ["str", "int", "str"])
    if word == "GRANTS":
        return Result(
            [f"Grants for {sess.user}@%"], [[f"GRANT ALL PRIVILEGES ON *.* TO '{sess.user}'@'%' WITH GRANT OPTION"]], ["str"]
        )
    if word == "PROCESSLIST":
        return Result(
            ["Id", "User", "Host", "db", "Command", "Time", "State", "Info"],
            [[sess.id, sess.user, sess.host, sess.db, "Query", 0, "starting", "SHOW PROCESSLIST"]],
        )
    if word == "CREATE" and p.accept("DATABASE", "SCHEMA"):
        db = p.ident()
        if db not in sess.server.dbs:
            raise SQLError(1049, "42000", f"Unknown database '{db}'")
        return Result(
            ["Database", "Create Database"],
            [[db, f"CREATE DATABASE `{db}` /*!40100 DEFAULT CHARACTER SET latin1 */"]],
            ["str", "str"],
        )
    if word in ("COLUMNS", "FIELDS"):
        p.expect("FROM", "IN")
        db, name = table_name(sess, p)
        return describe(get_table(sess, db, name))
    if word == "ENGINES":
        return Result(
            ["Engine", "Support", "Comment", "Transactions", "XA", "Savepoints"],
            [["InnoDB", "DEFAULT", "Supports transactions, row-level locking, and foreign keys", "YES", "YES", "YES"]],
        )
    raise syntax_error(p.sql[t.start :])


def describe(table: Table) -> Result:
    rows: list[list[object]] = []
    for i, (c, ty) in enumerate(zip(table.columns, table.types, strict=True)):
        sql_type = {"int": "int(11)", "float": "double"}.get(ty, "varchar(255)")
        key = "PRI" if table.auto is not None and i == 0 else ""
        extra = "auto_increment" if key else ""
        rows.append([c, sql_type, "NO" if key else "YES", key, None, extra])
    return Result(["Field", "Type", "Null", "Key", "Default", "Extra"], rows, ["str"] * 6)


def st_describe(sess: Session, p: Parser) -> Result:
    p.next()
    db, name = table_name(sess, p)
    return describe(get_table(sess, db, name))


def st_create(sess: Session, p: Parser) -> OkResult:
    p.expect("CREATE")
    if p.accept("DATABASE", "SCHEMA"):
        exists_ok = False
        if p.accept("IF"):
            p.expect("NOT")
            p.expect("EXISTS")
            exists_ok = True
        db = p.ident()
        if sess.server.grants.get(sess.user) is not None:
            raise sess.denied_db(db)
        if db in sess.server.dbs:
            if exists_ok:
                return OkResult(1)
            raise SQLError(1007, "HY000", f"Can't create database '{db}'; database exists")
        sess.server.dbs[db] = {}
        return OkResult(1)
    if p.accept("USER"):
        if p.accept("IF"):
            p.expect("NOT")
            p.expect("EXISTS")
        user = p.name_or_string()
        if p.accept("@"):
            p.next()
        t = p.peek()
        if t is not None and t.kind == "var":  # 'u'@'%' lexes as a user variable
            p.next()
        password = ""
        if p.accept("IDENTIFIED"):
            p.accept("WITH")
            if p.peek() is not None and p.peek().kind == "id" and not p.peek().kw("BY"):  # type: ignore[union-attr]
                p.next()
            if p.accept("BY"):
                password = str(p.next().value)
        sess.server.users.setdefault(user, password)
        sess.server.grants.setdefault(user, set())
        return OkResult(0)
    p.accept("TEMPORARY")
    if p.accept("TABLE"):
        if_not = False
        if p.accept("IF"):
            p.expect("NOT")
            p.expect("EXISTS")
            if_not = True
        db, name = table_name(sess, p)
        if db not in sess.server.dbs:
            raise SQLError(1049, "42000", f"Unknown database '{db}'")
        if name in sess.server.dbs[db]:
            if if_not:
                return OkResult(0)
            raise SQLError(1050, "42S01", f"Table '{name}' already exists")
        p.expect("(")
        columns, types, auto = [], [], None
        depth = 0
        current: list[Tok] = []
        defs: list[list[Tok]] = []
        while True:
            t = p.next()
            if t.kind == "op" and t.text == "(":
                depth += 1
            elif t.kind == "op" and t.text == ")":
                if depth == 0:
                    break
                depth -= 1
            if t.kind == "op" and t.text == "," and depth == 0:
                defs.append(current)
                current = []
            else:
                current.append(t)
        defs.append(current)
        for d in defs:
            if not d or d[0].kw("PRIMARY", "KEY", "INDEX", "UNIQUE", "CONSTRAINT", "FOREIGN"):
                continue
            columns.append(str(d[0].value))
            ty = d[1].text.upper() if len(d) > 1 else "VARCHAR"
            types.append("int" if "INT" in ty else "float" if ty in ("FLOAT", "DOUBLE", "DECIMAL", "REAL") else "str")
            if any(x.kw("AUTO_INCREMENT") for x in d):
                auto = len(columns) - 1
        sess.server.dbs[db][name] = Table(columns, types, auto)
        return OkResult(0)
    raise syntax_error(p.rest())


def st_drop(sess: Session, p: Parser) -> OkResult:
    p.expect("DROP")
    if p.accept("DATABASE", "SCHEMA"):
        if_exists = False
        if p.accept("IF"):
            p.expect("EXISTS")
            if_exists = True
        db = p.ident()
        if db.lower() in ("information_schema", "performance_schema") or sess.server.grants.get(sess.user) is not None:
            raise sess.denied_db(db)
        if db not in sess.server.dbs:
            if if_exists:
                return OkResult(0)
            raise SQLError(1008, "HY000", f"Can't drop database '{db}'; database doesn't exist")
        tables = len(sess.server.dbs.pop(db))
        if sess.db == db:
            sess.db = None
        return OkResult(tables)
    if p.accept("TABLE"):
        if_exists = p.accept("IF") and p.accept("EXISTS")
        while True:
            db, name = table_name(sess, p)
            if name not in sess.server.dbs.get(db, {}):
                if not if_exists:
                    raise SQLError(1051, "42S02", f"Unknown table '{db}.{name}'")
            else:
                del sess.server.dbs[db][name]
            if not p.accept(","):
                break
        return OkResult(0)
    if p.accept("USER"):
        p.accept("IF") and p.accept("EXISTS")
        user = p.name_or_string()
        sess.server.users.pop(user, None)
        sess.server.grants.pop(user, None)
        return OkResult(0)
    raise syntax_error(p.rest())


def st_insert(sess: Session, p: Parser) -> OkResult:
    p.next()
    p.accept("IGNORE")
    p.accept("INTO")
    db, name = table_name(sess, p)
    table = get_table(sess, db, name)
    cols = table.columns
    if p.accept("("):
        cols = []
        while True:
            cols.append(p.ident())
            if p.accept(")"):
                break
            p.expect(",")
    lower = [c.lower() for c in table.columns]
    for c in cols:
        if c.lower() not in lower:
            raise SQLError(1054, "42S22", f"Unknown column '{c}' in 'field list'")
    p.expect("VALUES", "VALUE")
    count = 0
    while True:
        p.expect("(")
        values: list[object] = []
        if not p.accept(")"):
            while True:
                values.append(sess.eval(p.expr()))
                if p.accept(")"):
                    break
                p.expect(",")
        if len(values) != len(cols):
            raise SQLError(1136, "21S01", "Column count doesn't match value count at row 1")
        row: list[object] = [None] * len(table.columns)
        for c, v in zip(cols, values, strict=True):
            i = lower.index(c.lower())
            ty = table.types[i]
            row[i] = v if v is None else _num(v) if ty in ("int", "float") else _text(v)
        if table.auto is not None and row[table.auto] is None:
            used = [int(r[table.auto]) for r in table.rows if isinstance(r[table.auto], int)]  # type: ignore[call-overload]
            row[table.auto] = max(used, default=0) + 1
            sess.last_insert_id = int(row[table.auto])  # type: ignore[call-overload]
        table.rows.append(row)
        count += 1
        if not p.accept(","):
            break
    return OkResult(count, sess.last_insert_id)


def st_delete(sess: Session, p: Parser) -> OkResult:
    p.next()
    p.expect("FROM")
    db, name = table_name(sess, p)
    table = get_table(sess, db, name)
    lower = [c.lower() for c in table.columns]
    if p.accept("WHERE"):
        cond = p.expr()
        keep = [r for r in table.rows if not sess.eval(cond, dict(zip(lower, r, strict=True)))]
    else:
        keep = []
    n = len(table.rows) - len(keep)
    table.rows = keep
    return OkResult(n)


def st_update(sess: Session, p: Parser) -> OkResult:
    p.next()
    db, name = table_name(sess, p)
    table = get_table(sess, db, name)
    lower = [c.lower() for c in table.columns]
    p.expect("SET")
    sets: list[tuple[int, Node]] = []
    while True:
        col = p.ident().lower()
        if col not in lower:
            raise SQLError(1054, "42S22", f"Unknown column '{col}' in 'field list'")
        p.expect("=")
        sets.append((lower.index(col), p.expr()))
        if not p.accept(","):
            break
    cond = p.expr() if p.accept("WHERE") else None
    n = 0
    for r in table.rows:
        env = dict(zip(lower, r, strict=True))
        if cond is None or sess.eval(cond, env):
            for i, e in sets:
                r[i] = sess.eval(e, env)
            n += 1
    return OkResult(n, info=f"Rows matched: {n}  Changed: {n}  Warnings: 0")


def st_use(sess: Session, p: Parser) -> OkResult:
    p.next()
    sess.use(p.ident())
    return OkResult(0)


def st_set(sess: Session, p: Parser) -> OkResult:
    p.next()
    t = p.peek()
    if t is not None and t.kind == "var" and not t.text.startswith("@@"):
        p.next()
        p.expect("=", ":")
        p.accept("=")
        sess.uservars[t.text[1:].lower()] = sess.eval(p.expr())
    elif t is not None and t.kw("PASSWORD"):
        p.next()
        if p.accept("FOR"):
            user = p.name_or_string()
            if p.peek() is not None and p.peek().kind == "var":  # type: ignore[union-attr]
                p.next()
        else:
            user = sess.user
        p.expect("=")
        sess.server.users[user] = str(sess.eval(p.expr()) or "")
    return OkResult(0)


def st_alter(sess: Session, p: Parser) -> OkResult:
    p.next()
    if p.accept("USER"):
        p.accept("IF") and p.accept("EXISTS")
        user = p.name_or_string()
        t = p.peek()
        if t is not None and t.kind == "var":
            p.next()
        if p.accept("IDENTIFIED"):
            p.accept("WITH")
            if p.peek() is not None and not p.peek().kw("BY"):  # type: ignore[union-attr]
                p.next()
            p.expect("BY")
            sess.server.users[user] = str(p.next().value)
    return OkResult(0)


def st_grant(sess: Session, p: Parser) -> OkResult:
    toks = [t for t in p.toks]
    on = next((i for i, t in enumerate(toks) if t.kw("ON")), None)
    to = next((i for i, t in enumerate(toks) if t.kw("TO")), None)
    if on is not None and to is not None and to + 1 < len(toks):
        user = str(toks[to + 1].value)
        target = str(toks[on + 1].value) if on + 1 < len(toks) else "*"
        grants = sess.server.grants.setdefault(user, set())
        if target == "*" or toks[on + 1].text == "*":
            sess.server.grants[user] = None
        elif grants is not None:
            grants.add(target)
    return OkResult(0)


def st_noop(sess: Session, p: Parser) -> OkResult:
    return OkResult(0)


_STATEMENTS = {
    "SELECT": st_select,
    "SHOW": st_show,
    "CREATE": st_create,
    "DROP": st_drop,
    "INSERT": st_insert,
    "REPLACE": st_insert,
    "DELETE": st_delete,
    "UPDATE": st_update,
    "USE": st_use,
    "SET": st_set,
    "ALTER": st_alter,
    "GRANT": st_grant,
    "REVOKE": st_noop,
    "FLUSH": st_noop,
    "BEGIN": st_noop,
    "START": st_noop,
    "COMMIT": st_noop,
    "ROLLBACK": st_noop,
    "DESCRIBE": st_describe,
    "DESC": st_describe,
    "EXPLAIN": st_describe,
    "DO": st_noop,
    "ANALYZE": st_noop,
    "OPTIMIZE": st_noop,
    "LOCK": st_noop,
    "UNLOCK": st_noop,
    "TRUNCATE": st_delete,
}


# --------------------------------------------------------------------------- connection


class Connection:
    """The protocol side of one client: packets, handshake, commands."""

    def __init__(self, server: Server, sock: socket.socket, addr: tuple[str, int]) -> None:
        self.server, self.sock = server, sock
        self.rfile = sock.makefile("rb")
        with server.lock:
            self.id = server.next_conn
            server.next_conn += 1
        self.sess = Session(server, self.id, addr[0])
        self.seq = 0
        self.caps = 0

    def read_packet(self) -> bytes | None:
        header = self.rfile.read(4)
        if len(header) < 4:
            return None
        length = header[0] | header[1] << 8 | header[2] << 16
        self.seq = (header[3] + 1) & 0xFF
        payload = self.rfile.read(length)
        return payload if len(payload) == length else None

    def packet(self, payload: bytes) -> bytes:
        data = struct.pack("<I", len(payload))[:3] + bytes([self.seq]) + payload
        self.seq = (self.seq + 1) & 0xFF
        return data

    def send(self, *payloads: bytes) -> None:
        self.sock.sendall(b"".join(self.packet(p) for p in payloads))

    def ok(self, affected: int = 0, insert_id: int = 0, status: int = STATUS_AUTOCOMMIT, info: str = "") -> bytes:
        return b"\x00" + lenenc_int(affected) + lenenc_int(insert_id) + struct.pack("<HH", status, 0) + info.encode()

    @staticmethod
    def error(code: int, state: str, message: str) -> bytes:
        return b"\xff" + struct.pack("<H", code) + b"#" + state.encode() + message.encode("utf-8", "replace")

    @staticmethod
    def eof(status: int = STATUS_AUTOCOMMIT) -> bytes:
        return b"\xfe" + struct.pack("<HH", 0, status)

    def handshake(self) -> bool:
        salt = new_salt()
        self.seq = 0
        hello = (
            b"\x0a" + self.server.version.encode() + b"\x00" + struct.pack("<I", self.id) + salt[:8] + b"\x00"
            + struct.pack("<H", SERVER_CAPS & 0xFFFF) + bytes([33]) + struct.pack("<H", STATUS_AUTOCOMMIT)
            + struct.pack("<H", SERVER_CAPS >> 16) + bytes([21]) + b"\x00" * 10 + salt[8:] + b"\x00" + NATIVE + b"\x00"
        )
        self.send(hello)
        data = self.read_packet()
        if data is None or len(data) < 32:
            return False
        caps = struct.unpack_from("<I", data, 0)[0]
        self.caps = caps
        pos = 32
        end = data.index(b"\x00", pos)
        user = data[pos:end].decode("utf-8", "replace")
        pos = end + 1
        if caps & PLUGIN_AUTH_LENENC:
            n, pos = read_lenenc_int(data, pos)
            token = data[pos : pos + n]
            pos += n
        elif caps & SECURE_CONNECTION:
            n = data[pos]
            token = data[pos + 1 : pos + 1 + n]
            pos += 1 + n
        else:
            end = data.index(b"\x00", pos)
            token = data[pos:end]
            pos = end + 1
        db = None
        if caps & CONNECT_WITH_DB and pos < len(data):
            end = data.find(b"\x00", pos)
            end = len(data) if end < 0 else end
            db = data[pos:end].decode("utf-8", "replace") or None
            pos = end + 1
        plugin = b""
        if caps & PLUGIN_AUTH and pos < len(data):
            end = data.find(b"\x00", pos)
            plugin = data[pos : end if end >= 0 else len(data)]
        if plugin and plugin != NATIVE:
            salt = new_salt()
            self.send(b"\xfe" + NATIVE + b"\x00" + salt + b"\x00")
            switched = self.read_packet()
            if switched is None:
                return False
            token = switched
        password = self.server.users.get(user)
        if password is None or token != scramble_native(password, salt):
            using = "YES" if token else "NO"
            self.send(
                self.error(1045, "28000", f"Access denied for user '{user}'@'{self.sess.host}' (using password: {using})")
            )
            return False
        self.sess.user = user
        if db:
            try:
                self.sess.use(db)
            except SQLError as e:
                self.send(self.error(e.code, e.state, e.message))
                return False
        self.send(self.ok())
        return True

    def result_set(self, res: Result, status: int) -> list[bytes]:
        out = [lenenc_int(len(res.columns))]
        for name, kind in zip(res.columns, res.types, strict=True):
            if kind == "int":
                ctype, charset, length, flags, dec = T_LONGLONG, 63, 21, 0x0081 | 0x8000, 0
            elif kind == "float":
                ctype, charset, length, flags, dec = T_DOUBLE, 63, 22, 0x0080 | 0x8000, 31
            else:
                ctype, charset, length, flags, dec = T_VAR_STRING, 33, 765, 0, 31
            out.append(
                lenenc_str(b"def") + lenenc_str(b"") + lenenc_str(b"") + lenenc_str(b"") + lenenc_str(name.encode())
                + lenenc_str(b"") + b"\x0c" + struct.pack("<HIBHB", charset, length, ctype, flags, dec) + b"\x00\x00"
            )
        out.append(self.eof(status))
        for row in res.rows:
            out.append(b"".join(b"\xfb" if v is None else lenenc_str(_text(v).encode()) for v in row))
        out.append(self.eof(status))
        return out

    def query(self, sql: str) -> None:
        stmts = split_statements(sql) if self.caps & MULTI_STATEMENTS else [sql]
        payloads: list[bytes] = []
        for i, stmt in enumerate(stmts):
            status = STATUS_AUTOCOMMIT | (STATUS_MORE_RESULTS if i < len(stmts) - 1 else 0)
            try:
                res = execute(self.sess, stmt)
            except SQLError as e:
                payloads.append(self.error(e.code, e.state, e.message))
                break
            except (IndexError, ValueError, TypeError, KeyError, AttributeError):
                bad = syntax_error(stmt.strip())
                payloads.append(self.error(bad.code, bad.state, bad.message))
                break
            if isinstance(res, Result):
                payloads.extend(self.result_set(res, status))
            else:
                payloads.append(self.ok(res.affected, res.insert_id, status, res.info))
        self.send(*payloads)

    def serve(self) -> None:
        if not self.handshake():
            return
        while True:
            data = self.read_packet()
            if not data:
                return
            cmd, body = data[0], data[1:]
            self.server.questions += 1
            if cmd == 0x01:  # COM_QUIT
                return
            if cmd == 0x03:  # COM_QUERY
                self.query(body.decode("utf-8", "replace"))
            elif cmd == 0x02:  # COM_INIT_DB
                try:
                    with self.server.lock:
                        self.sess.use(body.decode("utf-8", "replace"))
                    self.send(self.ok())
                except SQLError as e:
                    self.send(self.error(e.code, e.state, e.message))
            elif cmd == 0x0E:  # COM_PING
                self.send(self.ok())
            elif cmd == 0x04:  # COM_FIELD_LIST: tab completion; no column details
                self.send(self.eof())
            elif cmd == 0x09:  # COM_STATISTICS
                up = int(time.time() - self.server.started)
                self.send(
                    f"Uptime: {up}  Threads: 1  Questions: {self.server.questions}  Slow queries: 0  Opens: 105  "
                    "Flush tables: 1  Open tables: 98  Queries per second avg: 0.000".encode()
                )
            elif cmd == 0x1B:  # COM_SET_OPTION
                self.send(self.eof())
            elif cmd in (0x1F, 0x11):  # COM_RESET_CONNECTION, COM_CHANGE_USER (simplified)
                self.send(self.ok())
            else:
                self.send(self.error(1047, "08S01", "Unknown command"))


# --------------------------------------------------------------------------- entrypoint


def _now_entrypoint() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S+00:00", time.gmtime())


def _now_mysqld() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


def note(msg: str) -> None:
    _net.out(f"{_now_entrypoint()} [Note] [Entrypoint]: {msg}")


def fail(msg: str) -> int:
    _net.err(f"{_now_entrypoint()} [ERROR] [Entrypoint]: {msg}")
    return 1


def file_env(name: str) -> str | None:
    """The image's ``file_env``: VAR or VAR_FILE (file contents, trailing newlines stripped)."""
    value, path = os.environ.get(name), os.environ.get(name + "_FILE")
    if value and path:
        raise ValueError(f"Both {name} and {name}_FILE are set (but are exclusive)")
    if path:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().rstrip("\n")
    return value


def main(argv: list[str], spec: object) -> int:
    """``mysqld``: the entrypoint's checks and initialisation, then serve on 3306 until SIGTERM."""
    _net.setup_stdio()
    version = getattr(spec, "version", "") or "5.7.44"
    major = ".".join(version.split(".")[:2])
    pkg = f"{version}-1.el7" if major == "5.7" else f"{version}-1.el9"
    args = argv[1:]
    if "--version" in args or "-V" in args:
        _net.out(f"mysqld  Ver {version} for Linux on x86_64 (MySQL Community Server (GPL))")
        return 0
    note(f"Entrypoint script for MySQL Server {pkg} started.")
    note("Switching to dedicated user 'mysql'")
    note(f"Entrypoint script for MySQL Server {pkg} started.")
    try:
        root_pw = file_env("MYSQL_ROOT_PASSWORD")
        database = file_env("MYSQL_DATABASE")
        user = file_env("MYSQL_USER")
        user_pw = file_env("MYSQL_PASSWORD")
    except ValueError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"{exc.filename}: {exc.strerror}")
    allow_empty = os.environ.get("MYSQL_ALLOW_EMPTY_PASSWORD")
    random_pw = os.environ.get("MYSQL_RANDOM_ROOT_PASSWORD")
    if not root_pw and not allow_empty and not random_pw:
        return fail(
            "Database is uninitialized and password option is not specified\n"
            "    You need to specify one of the following as an environment variable:\n"
            "    - MYSQL_ROOT_PASSWORD\n"
            "    - MYSQL_ALLOW_EMPTY_PASSWORD\n"
            "    - MYSQL_RANDOM_ROOT_PASSWORD"
        )
    if user == "root":
        return fail(
            'MYSQL_USER="root", MYSQL_USER and MYSQL_PASSWORD are for configuring a regular user and cannot be used '
            "for the root user\n"
            "    Remove MYSQL_USER=\"root\" and use one of the following to control the root user password:\n"
            "    - MYSQL_ROOT_PASSWORD\n"
            "    - MYSQL_ALLOW_EMPTY_PASSWORD\n"
            "    - MYSQL_RANDOM_ROOT_PASSWORD"
        )
    port = 3306
    for a in args:
        if a.startswith("--port="):
            port = int(a.partition("=")[2])
    note("Initializing database files")
    note("Database files initialized")
    note("Starting temporary server")
    note("Temporary server started.")
    if random_pw and not root_pw:
        import base64

        root_pw = base64.b64encode(os.urandom(24)).decode()
        note(f"GENERATED ROOT PASSWORD: {root_pw}")
    server = Server(version, root_pw or "", port)
    if database:
        note(f"Creating database {database}")
        server.dbs.setdefault(database, {})
    if user and user_pw:
        note(f"Creating user {user}")
        server.users[user] = user_pw
        server.grants[user] = set()
        if database:
            note(f"Giving user {user} access to schema {database}")
            server.grants[user] = {database}
    elif user or user_pw:
        _net.out(f"{_now_entrypoint()} [Warn] [Entrypoint]: MYSQL_USER specified, but missing MYSQL_PASSWORD; MYSQL_USER will not be created")
    note("Stopping temporary server")
    note("Temporary server stopped")
    _net.out("")
    note("MySQL init process done. Ready for start up.")
    _net.out("")
    _net.install_signals(signal.SIGTERM, signal.SIGINT)
    try:
        sock = _net.listen(_net.port_for(port), backlog=151)
    except OSError as exc:
        _net.err(f"{_now_mysqld()} 0 [ERROR] Can't start server: Bind on TCP/IP port: {exc.strerror}")
        return 1
    pid = os.getpid()
    if major in ("5.6", "5.7"):
        _net.err(f"{_now_mysqld()} 0 [Note] mysqld (mysqld {version}) starting as process {pid} ...")
        _net.err(f"{_now_mysqld()} 0 [Note] InnoDB: Buffer pool(s) load completed")
        _net.err(f"{_now_mysqld()} 0 [Note] Server hostname (bind-address): '*'; port: {port}")
        _net.err(f"{_now_mysqld()} 0 [Note] IPv6 is available.")
        _net.err(f"{_now_mysqld()} 0 [Note] Event Scheduler: Loaded 0 events")
        _net.err(f"{_now_mysqld()} 0 [Note] mysqld: ready for connections.")
        _net.err(f"Version: '{version}'  socket: '/var/run/mysqld/mysqld.sock'  port: {port}  {server.comment}")
    else:
        _net.err(f"{_now_mysqld()} 0 [System] [MY-010116] [Server] /usr/sbin/mysqld (mysqld {version}) starting as process {pid}")
        _net.err(
            f"{_now_mysqld()} 0 [System] [MY-010931] [Server] /usr/sbin/mysqld: ready for connections. "
            f"Version: '{version}'  socket: '/var/run/mysqld/mysqld.sock'  port: {port}  {server.comment}."
        )

    def handle(conn: socket.socket, addr: tuple[str, int]) -> None:
        c = Connection(server, conn, addr)
        try:
            c.serve()
        finally:
            c.rfile.close()

    _net.serve(sock, handle)
    sock.close()
    if major in ("5.6", "5.7"):
        _net.err(f"{_now_mysqld()} 0 [Note] Giving 0 client threads a chance to die gracefully")
        _net.err(f"{_now_mysqld()} 0 [Note] Shutting down slave threads")
        _net.err(f"{_now_mysqld()} 0 [Note] InnoDB: Shutdown completed; log sequence number 2749563")
        _net.err(f"{_now_mysqld()} 0 [Note] mysqld: Shutdown complete")
    else:
        _net.err(f"{_now_mysqld()} 0 [System] [MY-013172] [Server] Received SHUTDOWN from user <via user signal>. Shutting down mysqld (Version: {version}).")
        _net.err(f"{_now_mysqld()} 0 [System] [MY-010910] [Server] /usr/sbin/mysqld: Shutdown complete (mysqld {version})  MySQL Community Server - GPL.")
    return 0
