"""Insecure deserialization beyond Java and PHP: a serialized object of Python, YAML, .NET, Node.js or Ruby
that runs code while the application rebuilds it (Java's gadget chains are `java_deserialization`'s, PHP's
objects `php_object_injection`'s).

A finding is one of:
- a **Python pickle** that imports a function which runs a command or code (`os.system`,
  `subprocess.Popen`, `builtins.eval`, …): by the GLOBAL opcode (`cos\\nsystem\\n`, protocols 0-3) or
  STACK_GLOBAL's two short strings (protocol 4 and 5), in a body that is a pickle (it ends with the STOP
  opcode `.`), in a value that holds one (percent-encoded) or in a value that is one base64-encoded
  (`gASV…`, `Y29zCnN5c3RlbQ…`, as cookie and session exploits send it);
- a **YAML tag** that builds an object of a language's class: PyYAML's `!!python/object/apply:` and kin,
  SnakeYAML's `!!javax.script.ScriptEngineManager`-style Java class tags, Ruby's `!ruby/object:` and
  `!ruby/hash:` (Psych's gadgets, `Gem::Installer` and its kin);
- a **.NET type** that runs code, named where a polymorphic serializer reads a type (Json.NET's `$type`,
  JavaScriptSerializer's `__type`) or built by XAML (`<ObjectDataProvider … MethodName="Start">`), or a
  BinaryFormatter stream (`AAEAAAD/////…`) naming one (ysoserial.net's gadgets);
- a **Node.js** function serialized for `node-serialize` (`_$$ND_FUNC$$_`) or funcster (`__js_function`),
  which those libraries rebuild with `eval`.

Looked for in the body's first `decode.MAX_VALUE_TEXT` bytes (whether or not a parser read it: a JSON
document's `$type` is a key, and a YAML or pickle body is none of the parsed types) and in the query's,
cookie's and form's values and JSON strings, percent-decoded.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from threats.catalogue import INSECURE_DESERIALIZATION, Hit, excerpt_of
from workers.detect.decode import MAX_VALUE_TEXT, body_and_values

# modules and functions of a pickle that runs something (the module as Python names it when pickling)
_PICKLE_MODULES = (
    rb"os|posix|nt|subprocess|builtins|__builtin__|commands|pty|platform|importlib|runpy|code|timeit"
)
_PICKLE_FUNCTIONS = (
    rb"system|popen\d?|exec\w*|spawn\w*|call|check_call|check_output|getoutput|getstatusoutput|Popen|run"
    rb"|eval|compile|getattr|__import__|import_module|run_path|run_module|interact|open"
)
# GLOBAL (`c<module>\n<name>\n`, protocols 0-3) or STACK_GLOBAL's two strings (protocols 4 and 5)
_PICKLE_GLOBAL = re.compile(
    rb"c(?P<module>" + _PICKLE_MODULES + rb")\n(?P<function>" + _PICKLE_FUNCTIONS + rb")\n"
    rb"|(?:\x8c.|X....)(?P<module4>" + _PICKLE_MODULES + rb")\x94?"
    rb"(?:\x8c.|X....)(?P<function4>" + _PICKLE_FUNCTIONS + rb")\x94?\x93",
    re.S,
)
# a value (after the NUL that joins it to the one before) that is a pickle base64-encoded: protocol 2-5's
# `\x80\x0N`, or protocol 0's GLOBAL of a module above
_BASE64_PICKLE = re.compile(
    rb"\x00(?:gA[I-X]|Y(?:29zC|3Bvc2l4C|250C|3N1YnByb2Nlc3MK|19fYnVpbHRpbl9fC|2J1aWx0aW5zC|2NvbW1hbmRzC"
    rb"|3B0eQ))[A-Za-z0-9+/_-]{8,}={0,2}"
)
_YAML_TAG = re.compile(
    rb"!!python/(?:object(?:/apply|/new)?|name|module)\s*:"
    rb"|!!(?:javax?|com\.sun|sun|org\.(?:apache|springframework|hibernate|mozilla)|jdk)\.[\w.$]+"
    rb"|!ruby/(?:object|hash|struct|class|module|marshalable)\s*:"
)
# .NET types that run code when a serializer builds them (ysoserial.net's gadgets and their kin)
_DOTNET_GADGETS = (
    rb"System\.Windows\.Data\.ObjectDataProvider|System\.Diagnostics\.Process"
    rb"|System\.Configuration\.Install\.AssemblyInstaller|System\.Activities\.Presentation\.WorkflowDesigner"
    rb"|System\.Windows\.ResourceDictionary|System\.Windows\.Markup\.XamlReader|System\.Windows\.Forms\.BindingSource"
    rb"|System\.Security\.Principal\.WindowsIdentity|System\.Security\.Claims\.ClaimsIdentity"
    rb"|System\.Web\.Security\.RolePrincipal|System\.IdentityModel\.Tokens\.SessionSecurityToken"
    rb"|System\.Data\.Services\.Internal\.ExpandedWrapper|System\.Management\.Automation\.PSObject"
    rb"|System\.DelegateSerializationHolder|System\.Workflow\.ComponentModel\.Serialization\.ActivitySurrogateSelector"
    rb"|Microsoft\.VisualStudio\.Text\.Formatting\.TextFormattingRunProperties|Microsoft\.PowerShell\.Editor"
    rb"|System\.Xml\.XmlDocument|System\.Data\.DataSet|System\.Runtime\.Remoting\.ObjRef"
)
_DOTNET_TYPED = re.compile(rb"[\"']?(?:\$type|__type)[\"']?\s*:\s*[\"'](?:" + _DOTNET_GADGETS + rb")")
_DOTNET_NAMED = re.compile(_DOTNET_GADGETS)
_XAML_PROCESS = re.compile(
    rb"<\w*:?ObjectDataProvider\b[^>]{0,400}(?:MethodName\s*=\s*[\"']Start|Process)", re.I | re.S
)
_BINARY_FORMATTER = re.compile(rb"AAEAAAD/////[A-Za-z0-9+/]{16,}={0,2}")
_BINARY_FORMATTER_RAW = b"\x00\x01\x00\x00\x00\xff\xff\xff\xff"
_NODE_FUNCTION = re.compile(rb"_\$\$ND_FUNC\$\$_\s*function|__js_function")


def check_serialized(body: bytes, values: Iterable[str]) -> Hit | None:
    """A Python, YAML, .NET, Node.js or Ruby object that runs code in the body or in `values`
    (percent-decoded), or None. Each finding is looked for behind bytes it cannot be without: one-byte
    tests (memchr) and long needles, which CPython finds fast, before any expression."""
    return serialized_in(body, body_and_values(body, values))


def serialized_in(body: bytes, texts: Iterable[bytes]) -> Hit | None:
    """`check_serialized` on texts `body_and_values` gave (shared by the checks that read them), and the
    body as it is (a pickle is a whole body; a XAML document's elements are not among an XML body's
    values), or None."""
    head = body[:MAX_VALUE_TEXT]
    if head[:1] in (b"\x80", b"c", b"(") and body.rstrip()[-1:] == b".":  # a pickle, whole
        hit = _pickle(head, "")
        if hit is not None:
            return hit
    if b"ObjectDataProvider" in head:
        found = _XAML_PROCESS.search(head)
        if found is not None:
            return Hit(INSECURE_DESERIALIZATION, "XAML that starts a process", excerpt_of(found.group()))
    for text in texts:
        hit = _check(b"\x00" + text)
        if hit is not None:
            return hit
    return None


def _check(text: bytes) -> Hit | None:
    found = _YAML_TAG.search(text) if b"!" in text and (b"!!" in text or b"!ruby/" in text) else None
    if found is not None:
        return Hit(
            INSECURE_DESERIALIZATION, "a YAML tag that builds a class", excerpt_of(text[found.start() :])
        )
    if (b"$" in text and b"$type" in text) or b"__type" in text:
        found = _DOTNET_TYPED.search(text)
        if found is None and (b"\x00$type\x00" in text or b"\x00__type\x00" in text):
            found = _DOTNET_NAMED.search(text)  # (a JSON document's keys and values, read apart)
        if found is not None:
            return Hit(
                INSECURE_DESERIALIZATION, "a .NET type that runs code", excerpt_of(text[found.start() :])
            )
    if b"ObjectDataProvider" in text:
        found = _XAML_PROCESS.search(text)
        if found is not None:
            return Hit(INSECURE_DESERIALIZATION, "XAML that starts a process", excerpt_of(found.group()))
    if (b"$" in text and b"_$$ND_FUNC$$_" in text) or b"__js_function" in text:
        found = _NODE_FUNCTION.search(text)
        if found is not None:
            why = "a serialized Node.js function"
            return Hit(INSECURE_DESERIALIZATION, why, excerpt_of(text[found.start() :]))
    if b"\xff" in text and _BINARY_FORMATTER_RAW in text:
        hit = _binary_formatter(text, "")
        if hit is not None:
            return hit
    if b"AAEAAAD/////" in text:
        for m in _BINARY_FORMATTER.finditer(text):
            hit = _binary_formatter(_decode(m.group()), " (base64)")
            if hit is not None:
                return hit
    # a pickle sent as it is (percent-encoded in a value): GLOBAL's line ends, or STACK_GLOBAL's opcode
    if (b"\n" in text and (b"\n(" in text or b"\nq" in text or b"\x80" in text)) or b"\x93" in text:
        hit = _pickle(text, "")
        if hit is not None:
            return hit
    for m in _BASE64_PICKLE.finditer(text):
        hit = _pickle(_decode(m.group()[1:]), " (base64)")
        if hit is not None:
            return hit
    return None


def _decode(token: bytes) -> bytes:
    raw = token.rstrip(b"=").replace(b"-", b"+").replace(b"_", b"/")
    try:
        return base64.b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        return b""


def _pickle(data: bytes, how: str) -> Hit | None:
    found = _PICKLE_GLOBAL.search(data)
    if found is None:
        return None
    module = found.group("module") or found.group("module4")
    function = found.group("function") or found.group("function4")
    why = f"a Python pickle{how} that calls {module.decode()}.{function.decode()}"
    return Hit(INSECURE_DESERIALIZATION, why, excerpt_of(found.group()))


def _binary_formatter(data: bytes, how: str) -> Hit | None:
    found = _DOTNET_NAMED.search(data)
    if found is None:
        return None
    why = f"a .NET BinaryFormatter stream{how} naming a gadget"
    return Hit(INSECURE_DESERIALIZATION, why, excerpt_of(found.group()))
