"""Generate the labelled masking evaluation corpus (deterministic): bench/masking/corpus/corpus.jsonl.

Each line is one realistic tool output (SQL rows, JSON API payload, log lines, e-mail, free text)
with the sensitive values it contains (``positives``: [detector, value]) and look-alikes that must
survive (``negatives``). Run: ``.venv/bin/python bench/masking/make_corpus.py``.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable
from pathlib import Path

import phonenumbers

from bastion.masking import checksum

SEED = 20240512
OUT = Path(__file__).parent / "corpus" / "corpus.jsonl"
FIRST = ["jane", "omar", "li", "sofia", "raj", "maria", "tom", "aiko", "lucas", "fatima", "ivan", "chen"]
LAST = ["doe", "haddad", "wei", "rossi", "patel", "silva", "novak", "tanaka", "muller", "okafor", "garcia"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "example.de", "uni.example.edu"]
WORDS = ["the", "order", "was", "shipped", "to", "the", "customer", "and", "the", "status", "changed", "after", "review", "of", "the", "invoice", "please", "confirm", "whether", "the", "account", "can", "be", "closed", "before", "the", "end", "of", "the", "quarter"]
R = random.Random(SEED)


def rand(chars: str, n: int) -> str:
    return "".join(R.choice(chars) for _ in range(n))


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + rand(string.digits, length - len(prefix) - 1)
    return next(body + d for d in string.digits if checksum.luhn_ok(body + d))


# -- positives -----------------------------------------------------------------------------------

def email() -> str:
    return f"{R.choice(FIRST)}.{R.choice(LAST)}{R.choice(['', str(R.randint(1, 99)), '+work'])}@{R.choice(DOMAINS)}"


def phone() -> str:
    while True:
        region = R.choice(["US", "GB", "DE", "FR", "IN", "BR", "JP", "AU", "ES", "NL"])
        ex = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert ex is not None, f"phonenumbers has no example mobile number for {region}"
        national = str(ex.national_number)
        ex.national_number = int(national[:3] + rand(string.digits, len(national) - 3))
        if phonenumbers.is_valid_number(ex):
            if region == "US" and R.random() < 0.5:
                return phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.NATIONAL)
            return phonenumbers.format_number(ex, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def card() -> str:
    prefix, length = R.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)])
    number = luhn_complete(prefix + rand(string.digits, 2), length)
    sep = R.choice(["", " ", "-"])
    if length == 15:
        return sep.join([number[:4], number[4:10], number[10:]]) if sep else number
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def iban() -> str:
    country, bban_len = R.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14), ("ES", 20), ("IT", 23)])
    if country == "GB":
        bban = "NWBK" + rand(string.digits, 14)
    elif country == "NL":
        bban = "ABNA" + rand(string.digits, 10)
    elif country == "IT":
        bban = "X" + rand(string.digits, 22)
    else:
        bban = rand(string.digits, bban_len)
    check = 98 - checksum.mod97(bban + country + "00")
    value = f"{country}{check:02d}{bban}"
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4)) if R.random() < 0.5 else value


def ssn() -> str:
    while True:
        v = f"{R.randint(1, 899):03d}-{R.randint(1, 99):02d}-{R.randint(1, 9999):04d}"
        if checksum.ssn_ok(v):
            return v


def ipv4() -> str:
    return f"{R.choice([23, 45, 81, 104, 151, 185, 203])}.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}"


def ipv6() -> str:
    groups = [f"{R.randint(1, 0xFFFF):x}" for _ in range(6)]
    if R.random() < 0.5:
        return "2001:db8:" + ":".join(groups)
    return f"2a00:{groups[0]}::{groups[1]}:{groups[2]}"


def nino() -> str:
    while True:
        v = rand("ABCEGHJKLMNPRSTWXYZ", 2) + rand(string.digits, 6) + R.choice("ABCD")
        if checksum.nino_ok(v):
            return v if R.random() < 0.5 else f"{v[:2]} {v[2:4]} {v[4:6]} {v[6:8]} {v[8]}"


def aadhaar() -> str:
    while True:
        v = str(R.randint(2, 9)) + rand(string.digits, 11)
        if checksum.aadhaar_ok(v):
            return f"{v[:4]} {v[4:8]} {v[8:]}"


def cpf() -> str:
    while True:
        v = rand(string.digits, 11)
        if checksum.cpf_ok(v):
            return f"{v[:3]}.{v[3:6]}.{v[6:9]}-{v[9:]}"


def cn_id() -> str:
    body = f"{R.choice(['110105', '310104', '440305', '510107'])}{R.randint(1950, 2005)}{R.randint(1, 12):02d}" \
           f"{R.randint(1, 28):02d}{R.randint(0, 999):03d}"
    return next(body + c for c in "0123456789X" if checksum.cn_resident_id_ok(body + c))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


ALNUM = string.ascii_letters + string.digits
SECRETS = {
    "aws_access_key_id": lambda: "AKIA" + rand(string.ascii_uppercase + "234567", 16),
    "github_token": lambda: R.choice(["ghp_", "gho_", "ghs_"]) + rand(ALNUM, 36),
    "gitlab_token": lambda: "glpat-" + rand(ALNUM + "_-", 20),
    "slack_token": lambda: f"xoxb-{rand(string.digits, 12)}-{rand(string.digits, 12)}-{rand(ALNUM, 24)}",
    "stripe_key": lambda: R.choice(["sk_live_", "rk_live_"]) + rand(ALNUM, 24),
    "google_api_key": lambda: "AIza" + rand(ALNUM + "_-", 35),
    "jwt": lambda: ".".join([b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
                             b64url(json.dumps({"sub": str(R.randint(1, 10**6)), "iat": 1715509800}).encode()),
                             b64url(R.randbytes(32))]),
}


def pem() -> str:
    body = "\n".join(base64.b64encode(R.randbytes(48)).decode() for _ in range(4))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"


PII = {"email": email, "phone": phone, "card": card, "iban": iban, "us_ssn": ssn, "ipv4": ipv4, "ipv6": ipv6,
       "uk_nino": nino, "in_aadhaar": aadhaar, "br_cpf": cpf, "cn_resident_id": cn_id}

# -- hard negatives ------------------------------------------------------------------------------


def order_number() -> str:
    while True:
        v = R.choice("4536") + rand(string.digits, 15)
        if not checksum.luhn_ok(v):
            return v


NEGATIVES: dict[str, Callable[[], str]] = {
    "order": order_number,
    "uuid": lambda: "-".join(f"{R.getrandbits(4 * n):0{n}x}" for n in (8, 4, 4, 4, 12)),
    "sha": lambda: f"{R.getrandbits(160):040x}",
    "version": lambda: f"{R.randint(0, 12)}.{R.randint(0, 30)}.{R.randint(0, 99)}",
    "timestamp": lambda: f"2024-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}T{R.randint(0, 23):02d}:{R.randint(0, 59):02d}:00Z",
    "date": lambda: f"{R.randint(1990, 2030)}-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}",
    "price": lambda: f"{R.randint(1, 99999)}.{R.randint(0, 99):02d}",
    "colour": lambda: "#" + rand("0123456789abcdef", 6),
    "epoch_ms": lambda: str(R.randint(1_600_000_000_000, 1_800_000_000_000)),
    "bad_iban": lambda: "DE00" + rand(string.digits, 18),
    "bad_ssn": lambda: f"{R.choice(['000', '666', '912'])}-{R.randint(10, 99)}-{R.randint(1000, 9999)}",
}

# -- documents -----------------------------------------------------------------------------------


def pick(n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        if R.random() < 0.65:
            kind = R.choice(sorted(PII))
            out.append((kind, PII[kind]()))
        else:
            kind = R.choice([*sorted(SECRETS), "private_key", "url_password", "password_assignment",
                             "secret_assignment", "aws_secret_access_key"])
            out.append((kind, secret_value(kind)))
    return out


def secret_value(kind: str) -> str:
    if kind in SECRETS:
        return SECRETS[kind]()
    if kind == "private_key":
        return pem()
    if kind == "aws_secret_access_key":
        return rand(ALNUM + "/+", 40)
    if kind == "secret_assignment":
        return rand(ALNUM, R.randint(20, 40))
    return rand(ALNUM + "!*~", R.randint(8, 16))  # passwords (URL-safe: '#', '%' would need encoding)


def render_secret(kind: str, value: str) -> str:
    """How a secret appears in text (assignment forms need their name)."""
    if kind == "url_password":
        return f"{R.choice(['postgres', 'mysql', 'redis', 'amqp'])}://{R.choice(FIRST)}:{value}@db{R.randint(1, 9)}.internal:5432/app"
    if kind == "password_assignment":
        return R.choice([f"Server=db;User Id=app;Password={value};", f"password: {value}", f"PWD={value}"])
    if kind == "secret_assignment":
        return R.choice([f'api_key = "{value}"', f"AUTH_TOKEN={value}", f'"client_secret": "{value}"'])
    if kind == "aws_secret_access_key":
        return f"aws_secret_access_key = {value}"
    return value


def sentence(k: int = 8) -> str:
    return " ".join(R.choice(WORDS) for _ in range(k))


def doc_free_text(pos: list[tuple[str, str]], neg: list[str]) -> str:
    parts = [sentence(R.randint(4, 10))]
    for kind, value in pos:
        parts.append(f"{sentence(3)} {render_secret(kind, value)} {sentence(2)}.")
    for value in neg:
        parts.append(f"ref {value} {sentence(3)}.")
    R.shuffle(parts)
    return " ".join(parts)


def doc_log(pos: list[tuple[str, str]], neg: list[str]) -> str:
    lines = []
    for kind, value in pos + [("neg", v) for v in neg]:
        ts = NEGATIVES["timestamp"]()
        payload = render_secret(kind, value) if kind != "neg" else value
        lines.append(f"{ts} INFO [req={NEGATIVES['uuid']()}] handler processed value={payload} in {R.randint(1, 900)}ms")
    R.shuffle(lines)
    return "\n".join(lines)


def doc_email(pos: list[tuple[str, str]], neg: list[str]) -> str:
    body = doc_free_text(pos, neg)
    sender, recipient = email(), email()
    pos.extend([("email", sender), ("email", recipient)])  # the headers are positives too
    return f"From: {sender}\nTo: {recipient}\nSubject: Order {order_number()}\n\nHello,\n{body}\n\nRegards"


def doc_sql(pos: list[tuple[str, str]], neg: list[str]) -> str:
    rows = ["id | created_at | value | note", "---+------------+-------+-----"]
    for i, (kind, value) in enumerate(pos + [("neg", v) for v in neg]):
        shown = value if kind == "neg" else render_secret(kind, value).replace("\n", "\\n")
        rows.append(f"{i + 1} | {NEGATIVES['date']()} | {shown} | {sentence(3)}")
    return "\n".join(rows)


def doc_json(pos: list[tuple[str, str]], neg: list[str]) -> dict[str, object]:
    items = []
    for kind, value in pos:
        field = R.choice(["value", "contact", "detail", "data", "info"])
        text = render_secret(kind, value) if R.random() < 0.7 else f"{sentence(2)} {render_secret(kind, value)}"
        items.append({"id": R.randint(1, 10**6), field: text, "updated": NEGATIVES["timestamp"]()})
    for value in neg:
        items.append({"id": R.randint(1, 10**6), "ref": value, "version": NEGATIVES["version"]()})
    R.shuffle(items)
    return {"status": "ok", "request_id": NEGATIVES["uuid"](), "items": items, "page": {"next": None, "size": len(items)}}


# A document kind: (positives, negatives) -> payload; may append the positives it adds itself.
DocMaker = Callable[[list[tuple[str, str]], list[str]], str | dict[str, object]]
KINDS: dict[str, DocMaker] = {"free_text": doc_free_text, "log": doc_log, "email": doc_email, "sql": doc_sql, "json": doc_json}


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w") as f:
        for i in range(1500):
            kind = R.choice(sorted(KINDS))
            pos = pick(R.randint(0, 4))
            neg = [NEGATIVES[k]() for k in R.sample(sorted(NEGATIVES), R.randint(1, 5))]
            payload = KINDS[kind](pos, neg)
            doc = {"id": i, "kind": kind, "payload": payload,
                   "positives": [[k, v] for k, v in pos], "negatives": neg}
            f.write(json.dumps(doc) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
