"""The application names a network rule may require (what DPI can identify).

One ordered tuple: a rule naming an application outside it is rejected by validation. The index of a
name is its stable number inside the compiled tables (a bit in a 64-bit mask), so names are only ever
appended, never reordered or removed.
"""

from __future__ import annotations

from collections.abc import Mapping

APPLICATIONS: tuple[str, ...] = (
    "HTTP",
    "HTTP2",
    "GRPC",
    "TLS/SSL",
    "SSH",
    "DNS",
    "DHCP",
    "NTP",
    "TFTP",
    "ECHO",
    "MySQL",
    "PostgreSQL",
    "Redis",
    "MongoDB",
    "Cassandra",
    "Kafka",
    "ZooKeeper",
    "Couchbase",
    "Memcached",
    "Spark",
    "Oracle",
    "MSSQL",
    "RTSP",
    "SIP",
    "ActiveMQ",
    "CouchDB",
    "ElasticSearch",
    "Consul",
    "etcd",
    "RabbitMQ",
    "Radius",
    "Syslog",
    "NFS",
    "SMB",
    "LDAP",
    "FTP",
    "SMTP",
    "IMAP",
    "POP3",
    "MQTT",
    "AMQP",
    "Nats",
    "Jabber",
    "Voltdb",
    "Hazelcast",
    "Solr",
    "Apache",
    "nginx",
    "Jetty",
    "WordPress",
)

# The compiled tables keep a rule's applications as a 64-bit mask.
MAX_APPLICATIONS = 64
assert len(APPLICATIONS) <= MAX_APPLICATIONS, "application mask is 64 bits"
assert len({a.lower() for a in APPLICATIONS}) == len(APPLICATIONS), "application names differ by case"

# Server software named by HTTP response headers (`workers.dpi.parsers.http.server_app`). A rule naming
# one of these is decided once the server's first response is seen, not at the request.
HTTP_SERVER_APPS: tuple[str, ...] = (
    "Apache",
    "nginx",
    "Jetty",
    "WordPress",
    "CouchDB",
    "etcd",
    "ElasticSearch",
    "Consul",
)

# Other spellings accepted in policy files and from DPI (lower case) → the canonical name.
ALIASES: Mapping[str, str] = {
    "tls": "TLS/SSL",
    "ssl": "TLS/SSL",
    "https": "TLS/SSL",
    "http/2": "HTTP2",
    "h2": "HTTP2",
    "postgres": "PostgreSQL",
    "postgresql": "PostgreSQL",
    "mongo": "MongoDB",
    "zookeeper": "ZooKeeper",
    "sqlserver": "MSSQL",
    "tns": "Oracle",
    "elastic": "ElasticSearch",
}

_CANONICAL: Mapping[str, str] = {a.lower(): a for a in APPLICATIONS} | dict(ALIASES)
APP_INDEX: Mapping[str, int] = {a: i for i, a in enumerate(APPLICATIONS)}


SERVER_APP_MASK: int = sum(1 << APP_INDEX[a] for a in HTTP_SERVER_APPS)


def canonical_app(name: str) -> str | None:
    """The canonical spelling of an application name, or None if it is not one we know."""
    return _CANONICAL.get(name.strip().lower())


def app_bit(name: str) -> int:
    """The mask bit of an application (0 if the name is unknown, which matches no app-specific rule)."""
    canon = _CANONICAL.get(name.lower())
    return 0 if canon is None else 1 << APP_INDEX[canon]
