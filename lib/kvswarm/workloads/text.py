"""Deterministic generators of realistic text: prose, code, instructions, conversations.

Every generator takes a `random.Random` and yields an endless stream of pieces (sentences,
lines, list items) that are meant to be concatenated as they are: each piece carries its
own whitespace. The same seed gives the same stream in every process on every host (no
use of `hash()`, sets or the clock), and a stream cut shorter is a prefix of the same
stream cut longer, which is what lets `kvswarm.tokens.TextFitter` size text in tokens by
choosing where to cut. Streams are lazy, so a 32k-token document never exists as anything
but the string it becomes.

The text only has to look like its kind to a tokenizer (a varied vocabulary, punctuation,
numbers, identifiers, indentation); it does not have to make sense.
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator

# --- vocabulary ---------------------------------------------------------------------------


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(sep))


_NOUNS = _words(
    "account analysis approach archive audit balance batch benchmark budget buffer cache "
    "capacity channel checkpoint client cluster committee component contract controller "
    "customer dashboard database deadline decision deployment design device discount "
    "document driver estimate evaluation event exception experiment facility feature "
    "forecast framework gateway guideline incident index infrastructure interface "
    "inventory invoice journal kernel latency ledger license load manager margin market "
    "measurement memory message method metric milestone model module network node "
    "objective operator order outage package partner payload pipeline platform policy "
    "portfolio process procurement product profile project proposal protocol prototype "
    "provider quota queue record region register release report repository request "
    "requirement resource response revenue review risk roadmap rollout router schedule "
    "schema scheduler segment sensor server service session shipment signal snapshot "
    "specification sprint stakeholder standard storage strategy subscription supplier "
    "survey system table target team template tenant threshold ticket timeline token "
    "transaction transfer trend upgrade user variance vendor version warehouse workflow "
    "workload"
)

_PLURALS = {
    "analysis": "analyses",
    "batch": "batches",
    "facility": "facilities",
    "inventory": "inventories",
    "policy": "policies",
    "process": "processes",
    "property": "properties",
    "query": "queries",
    "strategy": "strategies",
    "index": "indexes",
    "discount": "discounts",
}

_ADJECTIVES = _words(
    "accurate active additional annual available average careful central common "
    "complete complex consistent critical current daily dedicated detailed distributed "
    "early effective efficient entire essential existing expected external final "
    "financial flexible formal frequent general global gradual heavy historical "
    "independent initial internal large legacy likely local long main major manual "
    "measurable minor modern monthly narrow native necessary new notable official "
    "operational optional overall partial particular pending persistent physical "
    "practical preliminary previous primary private public quarterly rapid recent "
    "regional regular relevant reliable remote repeated required robust scalable "
    "secondary secure separate shared short significant simple single small "
    "specific stable standard steady strict strong structured substantial "
    "successful sufficient temporary typical unexpected uniform urgent useful "
    "valid visible weekly"
)

# base, third person, past, gerund
_VERBS = tuple(
    tuple(entry.split("/"))
    for entry in _words(
        "adjust/adjusts/adjusted/adjusting allocate/allocates/allocated/allocating "
        "analyse/analyses/analysed/analysing approve/approves/approved/approving "
        "assess/assesses/assessed/assessing assign/assigns/assigned/assigning "
        "balance/balances/balanced/balancing build/builds/built/building "
        "calculate/calculates/calculated/calculating change/changes/changed/changing "
        "collect/collects/collected/collecting compare/compares/compared/comparing "
        "complete/completes/completed/completing configure/configures/configured/configuring "
        "confirm/confirms/confirmed/confirming consolidate/consolidates/consolidated/"
        "consolidating create/creates/created/creating deliver/delivers/delivered/delivering "
        "deploy/deploys/deployed/deploying describe/describes/described/describing "
        "design/designs/designed/designing detect/detects/detected/detecting "
        "document/documents/documented/documenting estimate/estimates/estimated/estimating "
        "evaluate/evaluates/evaluated/evaluating expand/expands/expanded/expanding "
        "extend/extends/extended/extending identify/identifies/identified/identifying "
        "implement/implements/implemented/implementing improve/improves/improved/improving "
        "increase/increases/increased/increasing inspect/inspects/inspected/inspecting "
        "maintain/maintains/maintained/maintaining measure/measures/measured/measuring "
        "merge/merges/merged/merging migrate/migrates/migrated/migrating "
        "monitor/monitors/monitored/monitoring optimise/optimises/optimised/optimising "
        "prepare/prepares/prepared/preparing prioritise/prioritises/prioritised/prioritising "
        "publish/publishes/published/publishing reduce/reduces/reduced/reducing "
        "replace/replaces/replaced/replacing report/reports/reported/reporting "
        "require/requires/required/requiring resolve/resolves/resolved/resolving "
        "review/reviews/reviewed/reviewing schedule/schedules/scheduled/scheduling "
        "simplify/simplifies/simplified/simplifying streamline/streamlines/streamlined/"
        "streamlining summarise/summarises/summarised/summarising support/supports/supported/"
        "supporting test/tests/tested/testing track/tracks/tracked/tracking "
        "update/updates/updated/updating validate/validates/validated/validating "
        "verify/verifies/verified/verifying"
    )
)

_ADVERBS = _words(
    "accordingly carefully clearly consistently considerably currently directly "
    "effectively eventually explicitly fully gradually immediately largely mainly "
    "manually notably often partially previously primarily quickly rarely regularly "
    "significantly slightly steadily strictly successfully typically usually"
)

_FIRST_NAMES = _words(
    "Aiko Amara Anders Beatriz Chen Dalia Elena Farid Greta Hamid Ingrid Jonas Kavya "
    "Leila Lukas Mateo Mei Nadia Noor Olga Priya Rafael Sanjay Sofia Tariq Ulla Viktor "
    "Wen Yusuf Zofia"
)
_LAST_NAMES = _words(
    "Abara Berg Costa Dubois Eriksen Fischer Garcia Haddad Ito Jensen Kowalski Larsen "
    "Moreau Nakamura Okafor Petrov Quinn Rossi Schmidt Tanaka Ueda Varga Weber Xu Yilmaz "
    "Zhang"
)
_PLACES = _words(
    "Aberdeen Austin Bergen Bilbao Calgary Dublin Eindhoven Gdansk Hamburg Helsinki "
    "Kyoto Lagos Leeds Lisbon Lyon Madrid Malmo Melbourne Montreal Nairobi Osaka Porto "
    "Pune Rotterdam Seoul Tallinn Toronto Valencia Vienna Zurich"
)
_ORG_PARTS = _words(
    "Northwind Bluefield Crescent Ironbridge Lakeshore Meridian Oakridge Redstone "
    "Silverline Summit Westbrook Harbor Granite Evergreen Falcon Pinecrest"
)
_ORG_KINDS = _words("Systems Logistics Energy Health Analytics Manufacturing Holdings Labs")
_UNITS = _words("ms seconds hours days tonnes litres kilometres units orders requests")
_MONTHS = _words(
    "January February March April May June July August September October November December"
)
_CONNECTIVES = _words(
    "However|In addition|As a result|For this reason|In practice|Meanwhile|By contrast|"
    "Consequently|In the meantime|On the other hand|Overall|Similarly",
    sep="|",
)
_DOC_KINDS = _words(
    "Annual Report|Operations Review|Technical Manual|Incident Post-Mortem|Policy Handbook|"
    "Market Study|Architecture Overview|Quarterly Business Review|Compliance Audit|"
    "Capacity Planning Study",
    sep="|",
)
_LANGUAGES = _words("French German Spanish Italian Portuguese Dutch Japanese Korean Polish")


def _plural(noun: str) -> str:
    if noun in _PLURALS:
        return _PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Words:
    """Random word choices from one `random.Random`, with a per-stream topic vocabulary.

    Half the nouns come from a small topic set picked once per stream, as a real document
    keeps returning to its subject; the rest from the whole vocabulary.
    """

    def __init__(self, rng: random.Random, topic_size: int = 12, *, banked: bool = False) -> None:
        self.rng = rng
        self.topic = rng.sample(_NOUNS, topic_size)
        self.people = [f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}" for _ in range(4)]
        self.org = f"{rng.choice(_ORG_PARTS)} {rng.choice(_ORG_KINDS)}"
        self._bank = sentence_bank() if banked else None

    def sentence(self) -> str:
        """A sentence: drawn from the bank when the stream is banked, else generated."""
        if self._bank is not None:
            return self.rng.choice(self._bank)
        return _sentence(self)

    def noun(self) -> str:
        rng = self.rng
        return rng.choice(self.topic) if rng.random() < 0.5 else rng.choice(_NOUNS)

    def nouns(self) -> str:
        return _plural(self.noun())

    def adj(self) -> str:
        return self.rng.choice(_ADJECTIVES)

    def a_adj(self) -> str:
        """An adjective with its indefinite article: 'an early', 'a local'."""
        adj = self.rng.choice(_ADJECTIVES)
        return f"{_article(adj)} {adj}"

    def adv(self) -> str:
        return self.rng.choice(_ADVERBS)

    def verb(self, form: int) -> str:
        return self.rng.choice(_VERBS)[form]

    def person(self) -> str:
        return self.rng.choice(self.people)

    def place(self) -> str:
        return self.rng.choice(_PLACES)

    def number(self) -> str:
        rng = self.rng
        kind = rng.random()
        if kind < 0.4:
            return str(rng.randint(2, 99))
        if kind < 0.7:
            return f"{rng.randint(1, 999)},{rng.randint(0, 999):03d}"
        return f"{rng.randint(1, 99)}.{rng.randint(0, 9)}"

    def date(self) -> str:
        rng = self.rng
        return f"{rng.randint(1, 28)} {rng.choice(_MONTHS)} {rng.randint(2015, 2025)}"

    def phrase(self) -> str:
        """A noun phrase: 'the quarterly ledger', 'shared cache indexes'."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            return f"the {self.adj()} {self.noun()}"
        if roll < 0.6:
            return f"{self.adj()} {self.nouns()}"
        if roll < 0.8:
            return f"the {self.noun()} {self.noun()}"
        return f"each {self.noun()}"


# --- prose ---------------------------------------------------------------------------------


def _sentence(w: _Words) -> str:
    rng = w.rng
    roll = rng.random()
    if roll < 0.16:
        s = f"The {w.adj()} {w.noun()} {w.verb(2)} {w.phrase()} in {w.place()} during {w.date()}."
    elif roll < 0.30:
        s = (
            f"According to {w.person()}, {w.number()} percent of {w.nouns()} "
            f"{w.verb(0)} {w.phrase()} {w.adv()}."
        )
    elif roll < 0.42:
        s = (
            f"{w.person()} {w.verb(1)} that {w.phrase()} should {w.verb(0)} "
            f"{w.phrase()} before {rng.choice(_MONTHS)}."
        )
    elif roll < 0.54:
        s = (
            f"{rng.choice(_CONNECTIVES)}, {w.phrase()} {w.verb(1)} {w.phrase()}, "
            f"which {w.adv()} {w.verb(1)} {w.phrase()}."
        )
    elif roll < 0.64:
        s = (
            f"Average {w.noun()} {w.noun()} rose from {w.number()} to {w.number()} "
            f"{rng.choice(_UNITS)} after the team {w.verb(2)} {w.phrase()}."
        )
    elif roll < 0.74:
        s = (
            f"{w.verb(3).capitalize()} {w.phrase()} remains {w.a_adj()} priority "
            f"for {w.org} in {w.place()}."
        )
    elif roll < 0.84:
        s = (
            f"When {w.phrase()} is {w.verb(2)}, {w.phrase()} {w.verb(1)} "
            f"{w.phrase()} within {w.number()} {rng.choice(_UNITS)}."
        )
    elif roll < 0.92:
        s = (
            f"The {w.noun()} review of {w.date()} {w.verb(2)} {w.number()} "
            f"{w.adj()} {w.nouns()} and {w.number()} {w.adj()} {w.nouns()}."
        )
    else:
        s = (
            f'"We {w.verb(2)} {w.phrase()} {w.adv()}," said {w.person()}, '
            f'"and we will {w.verb(0)} {w.phrase()} next."'
        )
    return s[0].upper() + s[1:]


def _paragraph(w: _Words) -> Iterator[str]:
    count = w.rng.randint(3, 7)
    for i in range(count):
        yield w.sentence() + ("\n\n" if i == count - 1 else " ")


# --- the sentence bank: request-unique text at one random draw per sentence -------------------

BANK_TOPICS = 16
BANK_SENTENCES_PER_TOPIC = 64


@functools.cache
def sentence_bank() -> tuple[str, ...]:
    """1,024 sentences on 16 topics, generated once per process (the same in every one).

    Generating a sentence takes ~20 random draws and an f-string; a 4,000-token unique
    prompt generated word by word cost ~1 ms of CPU per request on the load generator's
    event loop. The generators of request-unique text (`banked=True`) draw whole sentences
    from here instead. What makes a prompt unique to a KV cache is its start: kvswarm's
    request tag comes first, and prefix caches (vLLM's blocks, LMCache's chunks, SGLang's
    radix tree) chain every block's key to the blocks before it, so no later block of the
    prompt can hit. Drawn at random from 1,024, the same run of sentences long enough to
    fill a 256-token chunk does not come back, so caches that match chunks anywhere
    (llama.cpp's `--cache-reuse`) find nothing either. Shared prefixes and trace blocks are
    still generated word by word: they must not repeat anything of each other.
    `kvswarm.workloads.bank` counts the bank once, so cold-start prompts need no count.
    """
    rng = seeded("kvswarm", "sentence bank")
    bank: list[str] = []
    for _ in range(BANK_TOPICS):
        w = _Words(rng)
        bank.extend(_sentence(w) for _ in range(BANK_SENTENCES_PER_TOPIC))
    return tuple(bank)


def prose(rng: random.Random, *, banked: bool = False) -> Iterator[str]:
    """A long document: a title, then numbered sections of paragraphs, without end.

    `banked`: its sentences are drawn from `sentence_bank()` (for request-unique text)."""
    w = _Words(rng, banked=banked)
    title = f"{w.org} {rng.choice(_DOC_KINDS)}: {w.adj().capitalize()} {w.noun().capitalize()}"
    yield f"# {title}\n\n"
    yield f"Prepared by {w.person()} and {w.person()}, {w.place()}, {w.date()}.\n\n"
    section = 0
    while True:
        section += 1
        heading = f"{w.verb(3).capitalize()} {w.adj()} {w.nouns()}"
        yield f"## {section}. {heading}\n\n"
        for _ in range(rng.randint(2, 5)):
            yield from _paragraph(w)


def document(rng: random.Random) -> Iterator[str]:
    """A document for question answering: a short reading instruction, then `prose`."""
    yield "Read the following document carefully; questions about it follow.\n\n"
    yield from prose(rng)


# --- code ----------------------------------------------------------------------------------

_TYPES = (
    "int",
    "str",
    "float",
    "bool",
    "bytes",
    "dict[str, int]",
    "list[str]",
    "list[int]",
    "None",
)
_EXCEPTIONS = _words("ValueError KeyError RuntimeError TimeoutError LookupError")
_STDLIB = _words(
    "json logging os re time dataclasses itertools functools collections pathlib typing"
)


def _ident(w: _Words) -> str:
    return f"{w.noun()}_{w.noun()}" if w.rng.random() < 0.4 else w.noun()


def _func_name(w: _Words) -> str:
    return f"{w.verb(0)}_{w.noun()}" if w.rng.random() < 0.7 else f"{w.verb(0)}_{_ident(w)}"


def _class_name(w: _Words) -> str:
    return w.noun().capitalize() + w.rng.choice(("", "Manager", "Store", "Client", "Config"))


def _statement(w: _Words, names: list[str], indent: str) -> str:
    rng = w.rng
    a = rng.choice(names)
    roll = rng.random()
    if roll < 0.2:
        return f"{indent}{_ident(w)} = {_func_name(w)}({a}, {rng.choice(names)})\n"
    if roll < 0.35:
        return (
            f"{indent}if {a} is None:\n"
            f'{indent}    raise {rng.choice(_EXCEPTIONS)}(f"{w.noun()} {{{a}!r}} is {w.adj()}")\n'
        )
    if roll < 0.5:
        item = w.noun()
        return (
            f"{indent}for {item} in {a}:\n"
            f"{indent}    {_ident(w)}.append({item}.{_func_name(w)}())\n"
        )
    if roll < 0.6:
        return f"{indent}# {w.verb(0).capitalize()} {w.phrase()} before {w.verb(3)} {w.phrase()}.\n"
    if roll < 0.72:
        return f'{indent}logger.debug("{w.verb(3)} %s {w.nouns()}", len({a}))\n'
    if roll < 0.84:
        source, limit = rng.choice(names), rng.randint(0, 64)
        return f"{indent}{a} = {{k: v for k, v in {source}.items() if v > {limit}}}\n"
    return f"{indent}{_ident(w)} += {rng.randint(1, 512)} * {a}\n"


def _function(w: _Words, indent: str = "", method: bool = False) -> Iterator[str]:
    rng = w.rng
    args = [_ident(w) for _ in range(rng.randint(1, 3))]
    params = ", ".join(f"{a}: {rng.choice(_TYPES[:-1])}" for a in args)
    if method:
        params = "self, " + params
    yield f"{indent}def {_func_name(w)}({params}) -> {rng.choice(_TYPES)}:\n"
    yield f'{indent}    """{w.verb(0).capitalize()} {w.phrase()} for {w.phrase()}."""\n'
    for _ in range(rng.randint(2, 6)):
        yield _statement(w, args, indent + "    ")
    yield f"{indent}    return {rng.choice(args)}\n\n"


def _class(w: _Words) -> Iterator[str]:
    rng = w.rng
    yield "@dataclass\n"
    yield f"class {_class_name(w)}:\n"
    yield f'    """{w.a_adj().capitalize()} {w.noun()} of {w.phrase()}."""\n\n'
    for _ in range(rng.randint(2, 5)):
        yield f"    {_ident(w)}: {rng.choice(_TYPES[:-1])} = {rng.randint(0, 100)}\n"
    yield "\n"
    for _ in range(rng.randint(1, 3)):
        yield from _function(w, indent="    ", method=True)


def code(rng: random.Random) -> Iterator[str]:
    """A Python codebase, file after file, without end."""
    w = _Words(rng, topic_size=16)
    package = w.noun()
    yield f"Repository {package}: {w.org} internal service code.\n\n"
    while True:
        yield f"# File: src/{package}/{_ident(w)}.py\n"
        yield f'"""{w.verb(3).capitalize()} {w.phrase()} for the {w.noun()} service."""\n\n'
        yield "from __future__ import annotations\n\n"
        for module in rng.sample(_STDLIB, rng.randint(2, 4)):
            yield f"import {module}\n"
        yield "from dataclasses import dataclass\n\n"
        yield "logger = logging.getLogger(__name__)\n"
        yield f"{w.noun().upper()}_{w.noun().upper()} = {rng.randint(1, 4096)}\n\n\n"
        for _ in range(rng.randint(2, 4)):
            if rng.random() < 0.5:
                yield from _class(w)
            else:
                yield from _function(w)
        yield "\n"


# --- instruction templates -----------------------------------------------------------------

_TASKS = ("translation", "summarisation", "classification", "extraction")


def _guideline(w: _Words) -> str:
    rng = w.rng
    roll = rng.random()
    if roll < 0.25:
        return f"Always keep {w.phrase()} unchanged, including {w.nouns()} and {w.nouns()}."
    if roll < 0.5:
        return f"Use {w.a_adj()} tone when the input describes {w.phrase()}."
    if roll < 0.7:
        return (
            f"If {w.phrase()} is ambiguous, prefer the {w.adj()} reading and mention "
            f"the {w.noun()} in a note."
        )
    if roll < 0.85:
        return f"Never {w.verb(0)} {w.phrase()} unless the input {w.verb(1)} it {w.adv()}."
    return f"Limit each {w.noun()} to {rng.randint(2, 40)} words and {w.verb(0)} {w.phrase()}."


def instructions(rng: random.Random) -> Iterator[str]:
    """A long instruction template: role, task, guidelines, glossary, examples."""
    w = _Words(rng)
    task = rng.choice(_TASKS)
    language = rng.choice(_LANGUAGES)
    yield (
        f"You are a careful assistant performing {task} for {w.org}. "
        f"The target language is {language}. Follow every rule below exactly.\n\n"
    )
    yield "## Guidelines\n\n"
    for i in range(1, rng.randint(12, 20)):
        yield f"{i}. {_guideline(w)}\n"
    yield "\n## Glossary\n\n"
    for _ in range(rng.randint(15, 30)):
        yield f"- {w.noun()} {w.noun()}: {w.adj()} {w.noun()} ({w.adv()} used)\n"
    yield "\n## Examples\n\n"
    example = 0
    while True:
        example += 1
        yield f"### Example {example}\n\nInput: "
        for _ in range(rng.randint(1, 3)):
            yield _sentence(w) + " "
        yield "\nOutput: "
        for _ in range(rng.randint(1, 2)):
            yield _sentence(w) + " "
        yield "\n\n"
        if example % 5 == 0:
            yield f"Note: {_guideline(w)}\n\n"


# --- conversations -------------------------------------------------------------------------


def opener(rng: random.Random) -> Iterator[str]:
    """A chat assistant's system prompt: persona, policies, products, FAQ, without end."""
    w = _Words(rng)
    name = rng.choice(_FIRST_NAMES)
    yield (
        f"You are {name}, the support assistant of {w.org}. You help customers with "
        f"{w.nouns()}, {w.nouns()} and {w.nouns()}. Be concise, friendly and precise.\n\n"
    )
    yield "## Policies\n\n"
    for i in range(1, rng.randint(8, 14)):
        yield f"{i}. {_guideline(w)}\n"
    yield "\n## Products\n\n"
    for _ in range(rng.randint(6, 12)):
        yield (
            f"- {w.noun().capitalize()} {rng.choice(('Pro', 'Lite', 'Plus', 'Max', 'One'))}: "
            f"{_sentence(w)} Price {rng.randint(5, 900)}.{rng.randint(0, 99):02d} EUR.\n"
        )
    yield "\n## Frequently asked questions\n\n"
    while True:
        yield f"Q: How do I {w.verb(0)} {w.phrase()}?\nA: "
        for _ in range(rng.randint(1, 3)):
            yield _sentence(w) + " "
        yield "\n\n"


# --- unique request parts ------------------------------------------------------------------


def _elaboration(w: _Words) -> Iterator[str]:
    while True:
        yield " " + w.sentence()


# The request-unique generators draw their sentences from the bank (`sentence_bank`).


def question(rng: random.Random) -> Iterator[str]:
    """A question about a document, then ever more context for it."""
    w = _Words(rng, topic_size=4, banked=True)
    roll = rng.random()
    if roll < 0.3:
        yield f"What does the document say about {w.phrase()} in {w.place()}?"
    elif roll < 0.55:
        yield f"Summarise the sections on {w.nouns()} in {rng.randint(2, 6)} bullet points."
    elif roll < 0.8:
        yield f"Which {w.nouns()} did {w.person()} {w.verb(0)}, and why?"
    else:
        yield f"Compare {w.phrase()} with {w.phrase()} and quote the relevant passages."
    yield from _elaboration(w)


def coding_request(rng: random.Random) -> Iterator[str]:
    """A coding assistant request about the codebase, then ever more detail."""
    w = _Words(rng, topic_size=4, banked=True)
    roll = rng.random()
    if roll < 0.3:
        yield f"Add a function `{_func_name(w)}` that {w.verb(1)} {w.phrase()}."
    elif roll < 0.55:
        yield f"Fix the bug in `{_func_name(w)}` where {w.phrase()} is {w.verb(2)} twice."
    elif roll < 0.8:
        yield f"Write unit tests for `{_class_name(w)}` covering {w.phrase()}."
    else:
        yield f"Refactor `{_func_name(w)}` to {w.verb(0)} {w.phrase()} {w.adv()}."
    yield from _elaboration(w)


def batch_input(rng: random.Random) -> Iterator[str]:
    """The input of one batch job (a passage to translate or summarise), without end."""
    w = _Words(rng, topic_size=6, banked=True)
    yield "Input:\n"
    while True:
        yield from _paragraph(w)


def user_turn(rng: random.Random, *, banked: bool = True) -> Iterator[str]:
    """A chat user's message, then ever more detail (`banked=False`: every sentence new)."""
    w = _Words(rng, topic_size=4, banked=banked)
    roll = rng.random()
    if roll < 0.35:
        yield f"Hi, how can I {w.verb(0)} {w.phrase()} for my {w.noun()}?"
    elif roll < 0.65:
        yield f"My {w.noun()} stopped working after I {w.verb(2)} {w.phrase()}. What now?"
    else:
        yield f"Can you explain the difference between {w.phrase()} and {w.phrase()}?"
    yield from _elaboration(w)


REPORT_REQUEST = "Summarise the following report in five sentences.\n\n"


def report_request(rng: random.Random) -> Iterator[str]:
    """A self-contained request: summarise the report that follows (cold start)."""
    yield REPORT_REQUEST
    yield from prose(rng, banked=True)


def seeded(*parts: object) -> random.Random:
    """A `random.Random` seeded from `parts`, identical in every process and on every host.

    Seeding from a string would do the same, but a digest keeps long worker ids cheap.
    """
    key = "\x1f".join(str(p) for p in parts).encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big"))
