"""Secrets in documents: Yelp's detect-secrets plugins, plus the forms it does not cover in prose and config.

detect-secrets (the scanner behind many pre-commit hooks) knows the provider formats (AWS, Azure storage, GitHub,
GitLab, Slack, Stripe, Twilio, SendGrid, npm, PyPI, OpenAI, JWTs, private-key headers), quoted `key = "value"`
assignments and URI credentials. It is written for source files, one line at a time; documents also hold secrets
it was never meant to see:

- unquoted `password: hunter2` / `pwd=...` / `client_secret: ...` lines (YAML, .env files, support tickets);
- whole PEM private-key blocks (detect-secrets reports the header line only; the key body is what must go);
- `Authorization: Bearer ...` / `Basic ...` values, Azure `AccountKey=` and SAS `sig=` values, `github_pat_`
  fine-grained tokens, tuneforge's own `tf-` gateway keys;
- secrets written in prose: "the vault passphrase is tangerine-owl-42", "use code 4471 to open the safe".

Every finding is a `SECRET` (or `API_KEY` for a provider-format key) Presidio result, so the policy's operator
replaces it like any other entity. A candidate value must look like a secret (digits, symbols or mixed case, not a
plain word, a placeholder a redaction left, an environment reference or a template), which keeps "the password is
incorrect" and `api_key: ${API_KEY}` as they are. detect-secrets runs only on lines that name a secret or carry a
provider marker: most lines of most documents hold neither.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Iterator

from presidio_analyzer import EntityRecognizer, RecognizerResult

SECRET = "SECRET"
API_KEY = "API_KEY"

# detect-secrets plugins by the entity their findings become (the IP and unquoted-entropy plugins are not used:
# public IPs are IP_ADDRESS in the policy, and entropy alone flags every commit hash and checksum in a README).
PROVIDER_PLUGINS = (
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "CloudantDetector", "DiscordBotTokenDetector",
    "GitHubTokenDetector", "GitLabTokenDetector", "IbmCloudIamDetector", "IbmCosHmacDetector", "JwtTokenDetector",
    "MailchimpDetector", "NpmDetector", "OpenAIDetector", "PypiTokenDetector", "SendGridDetector", "SlackDetector",
    "SoftlayerDetector", "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
)
SECRET_PLUGINS = ("BasicAuthDetector", "KeywordDetector", "PrivateKeyDetector")
# quoted high-entropy strings, on lines that name a secret only ("high-entropy tokens near secret words")
ENTROPY_PLUGINS = ({"name": "Base64HighEntropyString", "limit": 4.5}, {"name": "HexHighEntropyString", "limit": 3.0})

# words that name a secret; a line without one of them (or a provider marker) is not handed to detect-secrets
_SECRET_WORD = (r"pass(?:word|wd|phrase|code)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
                r"account[_-]?key|credentials?|auth|bearer|pin")
_TRIGGER = re.compile(
    rf"(?i)(?:{_SECRET_WORD}|://[^\s/@]*:[^\s/@]*@|-----BEGIN|AKIA|ASIA|ghp_|gho_|ghs_|ghu_|ghr_|github_pat_|glpat-|xox[abprs]-|"
    r"hooks\.slack\.com|sk_live|sk_test|rk_live|SG\.|npm_|pypi-|AIza|eyJ|sig=|AccountKey|SharedAccessKey|\btf-)"
)

# -- our own rules, each yielding (entity, value span) -------------------------------------------------------------
_PEM = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
_URI_PASSWORD = re.compile(r"(?<=://)[^\s/:@]{1,128}:([^\s/@]{1,256})@")
_AUTH_HEADER = re.compile(r"(?i)\b(?:bearer|basic|token)\s+([A-Za-z0-9._~+/-]{12,}=*)")
_KEY_NAME = (
    r"(?:[A-Za-z0-9]+[_.-])*(?:pass(?:word|wd|phrase|code)|(?<=[_.-])pass|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|"
    r"private[_-]?key|secret[_-]?key|account[_-]?key|shared[_-]?access[_-]?key|credentials?|pin)(?:[_.-][A-Za-z0-9]+)*"
)
_ASSIGNED = re.compile(
    rf"(?i)(?<![A-Za-z0-9])(?P<name>{_KEY_NAME})[\"']?\s{{0,3}}(?::|=>|=|\bis\b)\s{{0,3}}"
    r"(?:(?P<q>[\"'])(?P<quoted>[^\"'\n]{3,200})(?P=q)|(?P<bare>[^\s\"'`,;()<>\[\]{}|]{3,200}))"
)
_PROSE = re.compile(
    r"(?i)\b(?P<name>pass(?:word|phrase|code)|pin(?: code)?|secret|combination|code ?word|(?:door|safe|alarm|gate) code)"
    r"(?:\s+(?:for|to|of|on|at)\s+(?:the\s+|our\s+|my\s+|your\s+)?[\w-]+(?:\s[\w-]+)?)?"
    r"\s*(?:is|was|will be|:|=)\s+(?:now\s+|still\s+)?"
    r"(?:[\"“‘'](?P<quoted>[^\"”’'\n]{3,200})[\"”’']|(?P<bare>[^\s\"'“”‘’`,;()<>\[\]{}|]{3,200}))"
)
_USE_CODE = re.compile(
    r"(?i)\b(?:use|enter|type|dial|key in)\s+(?:the\s+)?(?:code|pin|passcode|password|passphrase)\s+"
    r"[\"“']?(?P<bare>[^\s\"”',;]{3,100})"
)
_XML_SETTING = re.compile(  # <add key="StoragePassword" value="..."/> (.NET config), <entry name="api.token" value="..."/>
    rf"(?i)\b(?:key|name)\s*=\s*[\"'][^\"'\n]*?(?:{_SECRET_WORD})[^\"'\n]*[\"']\s+value\s*=\s*[\"'](?P<quoted>[^\"'\n]{{3,200}})[\"']"
)
_PROVIDER = [
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,}"),
    re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"),
    re.compile(r"\bhttps://hooks\.slack\.com/services/[A-Za-z0-9]+/[A-Za-z0-9]+/[A-Za-z0-9]+"),
    re.compile(r"(?i)(?<=AccountKey=)[A-Za-z0-9+/]{20,}={0,2}"),
    re.compile(r"(?i)(?<=SharedAccessKey=)[A-Za-z0-9+/]{20,}={0,2}"),
    re.compile(r"(?<=[?&]sig=)[A-Za-z0-9%+/=]{16,}"),
    re.compile(r"(?<![\w-])tf-[A-Za-z0-9_-]{32}(?![\w-])"),  # tuneforge gateway keys
]
# a value that is a reference or a template, not a secret
_NOT_A_VALUE = re.compile(
    r"(?i)^(?:\$|%|\{|<|\*{3}|x{4}|os\.|env\b|environ|getenv|process\.env|EnvVar|secrets\.|vault:|null$|none$|nil$|"
    r"true$|false$|required$|optional$|empty$|redacted$|hidden$|masked$|your[_-]|example$|placeholder$|\.\.\.)"
)
_WORD_JOINERS = re.compile(r"[-_.]")
# a value that names a secret instead of holding one: `client_secret='client_secret'`, `password=PASSWORD`,
# `aws_secret_access_key=SECRET_KEY`, `OPENAI_API_KEY="My API Key"` (documentation and code, not credentials)
_NAMES_A_SECRET = re.compile(r"(?i)pass(?:word|wd|phrase)?|pwd|secret|token|key|credential|auth")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_]*")


def plausible(value: str, name: str = "") -> bool:
    """Does `value`, assigned to or named by `name`, look like a secret rather than prose or a reference?"""
    value = value.strip().rstrip(".:,!?")
    if len(value) < 3 or _NOT_A_VALUE.match(value) or any(c in value for c in "<>()|`"):
        return False
    if not any(c.isdigit() for c in value) and _NAMES_A_SECRET.search(value):
        return False
    if _IDENTIFIER.fullmatch(value) and ("_" in value or value.islower()):  # a variable or a function, not a value
        return False
    if re.fullmatch(r"\d+(?:[- ]\d+)*", value):  # a PIN, a door code, a combination; but not "timeout_s = 30"
        return len(value) >= 4 and bool(re.search(r"(?i)pass|pin|code|combination|secret", name))
    if " " in value:  # a quoted passphrase of several words
        return len(value) >= 8
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    symbols = any(not c.isalnum() for c in value)
    mixed_case = value != value.lower() and value != value.upper() and not value[1:].islower()
    if has_alpha and has_digit:
        return len(value) >= 4
    if symbols and has_alpha:
        return len(value) >= 6 and (len(_WORD_JOINERS.split(value)) >= 2 or not value.isalpha())
    return mixed_case and len(value) >= 8


def own_findings(text: str) -> Iterator[tuple[str, int, int]]:
    """(entity, start, end) of every secret our rules find in `text`."""
    for match in _PEM.finditer(text):
        yield SECRET, match.start(), match.end()
    for pattern in _PROVIDER:
        for match in pattern.finditer(text):
            yield API_KEY, match.start(), match.end()
    for match in _URI_PASSWORD.finditer(text):
        value = match.group(1)  # any password in a URI, unless it is a placeholder naming one (`user:password@`)
        names_one = _IDENTIFIER.fullmatch(value) and ("_" in value or _NAMES_A_SECRET.fullmatch(value))
        if plausible(value, "password") or not (_NOT_A_VALUE.match(value) or "<" in value or names_one):
            yield SECRET, match.start(1), match.end(1)
    for match in _AUTH_HEADER.finditer(text):
        value = match.group(1)
        if any(c.isdigit() for c in value) or len(value) >= 20:
            yield SECRET, match.start(1), match.end(1)
    for pattern in (_ASSIGNED, _PROSE, _USE_CODE, _XML_SETTING):
        for match in pattern.finditer(text):
            group = "quoted" if match.groupdict().get("quoted") else "bare"
            value, name = match.group(group), match.groupdict().get("name") or "code"
            if group == "bare":  # a sentence's full stop is not part of the value
                value = value.rstrip(".")
            if value and plausible(value, name) and not text[match.end(group):match.end(group) + 1] == "(":
                yield SECRET, match.start(group), match.start(group) + len(value)


@lru_cache(maxsize=1)
def _plugins():
    """The detect-secrets plugin instances, configured once per process."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    classes = {cls.__name__: cls for cls in get_mapping_from_secret_type_to_class().values()}
    plugins = []
    for name in (*PROVIDER_PLUGINS, *SECRET_PLUGINS):
        if name in classes:
            plugins.append((API_KEY if name in PROVIDER_PLUGINS else SECRET, classes[name]()))
    for spec in ENTROPY_PLUGINS:
        plugins.append((SECRET, classes[spec["name"]](limit=spec["limit"])))
    return plugins


def detect_secrets_findings(text: str) -> Iterator[tuple[str, int, int]]:
    """(entity, start, end) of what detect-secrets' plugins report, line by line, on lines that name a secret."""
    from detect_secrets.util.code_snippet import get_code_snippet

    offset = 0
    for line in text.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        if len(line) > 4000 or not _TRIGGER.search(line):
            continue
        stripped = line.rstrip("\r\n")
        context = get_code_snippet(lines=[stripped], line_number=1)
        for entity, plugin in _plugins():
            for secret in plugin.analyze_line(filename="document.txt", line=stripped, line_number=1, context=context):
                value = secret.secret_value
                if not value or not plausible(value, "secret" if entity == SECRET else "key"):
                    continue
                at = stripped.find(value)
                while at >= 0:
                    yield entity, start + at, start + at + len(value)
                    at = stripped.find(value, at + len(value))


class SecretsRecognizer(EntityRecognizer):
    """Presidio recognizer for secrets: detect-secrets' plugins plus tuneforge's rules for documents (above)."""

    def __init__(self, supported_language: str = "en"):
        super().__init__(supported_entities=[SECRET, API_KEY], supported_language=supported_language,
                         name="SecretsRecognizer")

    def load(self) -> None:  # noqa: D102 - nothing to load
        pass

    def analyze(self, text, entities, nlp_artifacts=None):  # noqa: D102
        wanted = set(entities or self.supported_entities)
        found: dict[tuple[int, int], str] = {}
        for entity, start, end in (*own_findings(text), *detect_secrets_findings(text)):
            if entity in wanted or (entity == API_KEY and SECRET in wanted):
                found.setdefault((start, end), entity if entity in wanted else SECRET)
        return [RecognizerResult(entity_type=entity, start=start, end=end, score=0.9 if entity == API_KEY else 0.8)
                for (start, end), entity in sorted(found.items())]
