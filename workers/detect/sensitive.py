"""Requests for files a web server must never serve, as scanners probe for them (nikto, nuclei, dirb,
gobuster): a version-control directory (`/.git/config`, `/.svn/entries`), an environment or credentials
file (`/.env`, `/.aws/credentials`, `/.ssh/id_rsa`, `/.htpasswd`), a server's own configuration
(`/.htaccess`, `/web.config`), a shell's history, and a source or configuration file's editor backup
(`/wp-config.php.bak`, `/config.php~`, `/.index.php.swp`), which the server sends as text, secrets and all.

Looked for in the request's path (percent-decoded once, any case: IIS serves `WEB.CONFIG`), by segment,
so `/.well-known/…`, `/environment`, `/docs/.github-guide` and a query that names such a file are no
finding.
"""

from __future__ import annotations

import re

from threats.catalogue import SENSITIVE_FILE_ACCESS, Hit, excerpt_of
from workers.detect.decode import percent_decode

MAX_PATH = 2048  # characters of a path read
_SENSITIVE = re.compile(
    r"/(?:"
    # version control: the directory's metadata (its config, index, refs, entries)
    r"\.(?:git|svn|hg|bzr)(?:/|\Z)|cvs/(?:root|entries|repository)\Z"
    # environment and credentials files
    r"|\.env(?:\.[\w-]{1,20})?\Z|\.(?:htpasswd|htaccess|npmrc|pypirc|netrc|pgpass|my\.cnf|s3cfg|git-credentials)\Z"
    r"|\.aws/(?:credentials|config)\Z|\.ssh/(?:id_\w+|authorized_keys|known_hosts)\Z|id_(?:rsa|dsa|ecdsa|ed25519)\Z"
    r"|\.docker/config\.json\Z|\.kube/config\Z|web\.config\Z|\.ds_store\Z"
    # a shell's or a database client's history
    r"|\.(?:bash|zsh|sh|mysql|psql|python)_history\Z"
    # an editor's or an admin's backup of a source or configuration file
    r"|[\w.-]{1,100}\.(?:php|phtml|asp|aspx|jsp|py|rb|pl|cgi|conf|config|cfg|ini|env|yml|yaml|xml|json|sql|inc)"
    r"(?:\.(?:bak|backup|old|orig|save|sav|swp|swo|tmp|copy)|~)\Z"
    r"|\.[\w.-]{1,100}\.(?:php|asp|aspx|jsp|py|rb|conf|config|ini|yml|yaml)\.sw[op]\Z"
    r")",
    re.I,
)


def check_sensitive_path(uri: bytes) -> Hit | None:
    """A request for a file a web server must never serve (`uri`: path and query as sent), or None."""
    path = uri[:MAX_PATH].decode("latin-1").partition("?")[0]
    if "." not in path and "%" not in path:  # (every name above holds a dot but CVS's and a key's)
        low = path.lower()
        if "cvs/" not in low and "/id_" not in low:
            return None
    if "%" in path:
        path = percent_decode(path)
    found = _SENSITIVE.search(path)
    if found is None:
        return None
    return Hit(SENSITIVE_FILE_ACCESS, f"a request for {found.group()[:40]!r}", excerpt_of(path))
