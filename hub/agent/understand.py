"""What a request says, in words: the offline planner's reading of natural language (no model).

This module knows English, not the estate: stems and irregular forms, numbers in words and with units,
comparisons ("under 20", "at least 4 million", "8 or more", "4 or better"), top-N and ordering ("the 5
biggest", "the single depot holding the most"), negations that ask for an anti-join ("never", "without",
"have no"), derived measures ("price times quantity"), ratios ("the cancellation rate", "share of ... that
ended in a win"), grains and schedules ("per month", "every Monday at 8", "every hour"), and whether a
request asks to change something (every mutating intent, not a fixed verb list: imperative change verbs,
"X is now Y", "should be", "make A B", "to 0").

The planner (:mod:`hub.agent.planner`) matches the words this module finds against the vocabulary of the
catalog's tables (names, descriptions, sample values) and a general business thesaurus
(:data:`THESAURUS`): a word of the request names a table, a column or a value, or it is filler English
(:data:`FILLER`); a noun that is neither is reported as "no system offers ...".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

import snowballstemmer

_SNOWBALL = snowballstemmer.stemmer("english")

#: Irregular English forms -> the base form (the planner matches stems, and "won" is no stem of "win").
IRREGULAR = {
    "won": "win", "sold": "sell", "bought": "buy", "paid": "pay", "spent": "spend", "took": "take",
    "taken": "take", "made": "make", "gave": "give", "given": "give", "got": "get", "gotten": "get",
    "held": "hold", "kept": "keep", "left": "leave", "lost": "lose", "sent": "send", "went": "go", "gone": "go",
    "came": "come", "ran": "run", "brought": "bring", "bore": "bear", "chose": "choose", "chosen": "choose",
    "wrote": "write", "written": "write",
    "spoke": "speak", "spoken": "speak", "put": "put", "set": "set", "shut": "shut", "cut": "cut",
    "people": "person", "men": "man", "women": "woman", "children": "child", "data": "data", "media": "medium",
    "criteria": "criterion", "best": "good", "better": "good", "worst": "bad", "worse": "bad",
    "centre": "center", "centres": "center", "catalog": "catalogue", "catalogs": "catalogue",
}


@lru_cache(maxsize=8192)
def stem(word: str) -> str:
    """The stem of *word*: irregular forms first, then the Snowball English stemmer."""
    w = word.lower().strip("'")
    w = w.removesuffix("'s")
    if w in IRREGULAR:
        w = IRREGULAR[w]
    return str(_SNOWBALL.stemWord(w))


def split_words(text: str) -> list[str]:
    """Lower-case words of *text*: camelCase and snake_case split, digits kept."""
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [w for w in re.split(r"[^A-Za-z0-9]+", text.lower()) if w]


def stems(text: str) -> list[str]:
    return [stem(w) for w in split_words(text)]


def _words(text: str) -> list[str]:
    """The whitespace-separated words of a word list written as text (one place to keep long lists readable)."""
    return text.split()


#: Groups of words that mean the same thing in business data. A column or table named by one word of a group
#: is also named by the others (with a lower weight). General vocabulary, not a list per request: it is the
#: background knowledge a person brings; the estate's own words (names, descriptions, sample values) come on top.
THESAURUS: list[tuple[str, ...]] = [
    ("customer", "client", "account", "buyer", "purchaser", "consumer", "patron", "shopper"),
    ("contact", "interaction", "touchpoint", "conversation", "engagement", "activity", "exchange", "speak", "talk"),
    ("order", "sale", "sell", "purchase", "buy", "deal"),
    ("line", "item", "position", "orderline"),
    ("product", "item", "article", "thing", "good", "merchandise", "offer", "sku"),
    ("warehouse", "depot", "distribution", "center", "storehouse", "site", "facility", "dc"),
    ("statement", "payment", "transfer", "transaction", "booking", "remittance", "pay", "money"),
    ("level", "stock", "inventory", "onhand", "hand", "shelf", "shelves"),
    ("category", "family", "group", "type", "kind", "class", "segment", "line-up"),
    ("tier", "segment", "grade", "loyalty", "rank"),
    ("region", "area", "territory", "zone"),
    ("city", "town", "municipality"),
    ("country", "nation"),
    ("amount", "value", "worth", "total", "sum", "money", "spend", "euro", "dollar", "revenue"),
    ("revenue", "turnover", "income", "sale", "earnings"),
    ("annual", "year", "yearly", "per-year"),
    ("price", "cost", "tariff", "fee"),
    ("quantity", "unit", "piece", "qty", "volume", "count"),
    ("duration", "length", "long", "last", "minute"),
    ("score", "rate", "rating", "grade", "mark", "star"),
    ("status", "state", "stage"),
    ("outcome", "result", "end"),
    ("channel", "medium", "via"),
    ("name", "title", "label"),
    ("updat", "touch", "chang", "modifi", "edit", "revis"),
    ("creat", "regist", "sign", "join", "onboard"),
    ("creat", "raise", "post", "submit", "insert"),
    ("occur", "happen", "took", "when", "held"),
    ("book", "post", "receiv", "arriv", "came", "come", "incom"),
    ("payer", "sender", "originator", "remitter", "payee"),
    ("purpos", "memo", "descript", "text", "remark"),
    ("refer", "ref"),
    ("activ", "avail", "buyabl", "purchas", "sellabl", "live", "enabl", "buy"),
    ("paid", "settl", "pay"),
    ("ship", "dispatch", "deliv", "sent", "send"),
    ("email", "mail", "e-mail"),
    ("code", "abbrevi", "short"),
    ("open", "pend", "outstand"),
    ("cancel", "cancellation", "abort", "void"),
    ("win", "won", "success", "close"),
    ("lose", "lost", "fail"),
    ("unit_cost", "cost", "purchase"),
    ("id", "identifi", "number", "key"),
    ("task", "to-do", "todo", "reminder", "follow-up", "followup", "chase"),
]
_THES: dict[str, set[str]] = {}
for _group in THESAURUS:
    _stems = {stem(w) for w in _group}
    for _s in _stems:
        _THES.setdefault(_s, set()).update(_stems - {_s})


def related(word_stem: str) -> set[str]:
    """The stems the thesaurus relates to *word_stem* (itself excluded)."""
    return set(_THES.get(word_stem, ()))


#: Words that carry no field meaning in a request: function words, generic verbs, adverbs, quantifiers,
#: generic nouns ("thing", "list", "figure"). A word of a request that is neither filler nor in the
#: vocabulary of the estate is a concept no system offers.
FILLER = set(_words("""
a an the of to in on for from with without by at as into onto over under about across after before between
during per via than then that this these those there here it its it's they them their theirs we us our ours
you your i me my mine he she his her him is are was were be been being am do does did done doing have has had
having can could may might must shall should will would not no nor never none nobody nothing any anything
anyone anybody some something someone somebody all every each either neither both other others another such
same own which who whom whose what when where why how whether if else also too very just only still even
again already yet ever so and or but because while since until till up down out off away back there here
please kindly give show list pull get fetch load bring read display return want need like see tell find
look looking lookup let us me report retrieve extract provide produce compute calculate work out figure
thing things stuff item items entry entries record records row rows line lines detail details info
information overview summary breakdown view figures figure number numbers count counts amount much many
more most less least fewest few lot lots bit top bottom first last next previous single one two three four
five six seven eight nine ten eleven twelve twenty hundred thousand million billion half quarter dozen
zero nil dump snapshot extract feed export listing rundown roster history sheet spreadsheet csv dataset
batch copy file files log logs document documents
day days daily week weeks weekly month months monthly year years yearly annual annually hour hours
hourly minute minutes today yesterday tomorrow now morning mornings evening evenings night nights nightly
noon midnight monday tuesday wednesday thursday friday saturday sunday january february march april may june
july august september october november december mondays tuesdays wednesdays thursdays fridays saturdays
sundays weekday weekdays weekend weekends workday workdays mid middle beginning end start early late recent recently
current currently latest new newest old oldest time times date dates period window
along together alongside including include includes included excluding exclude except besides plus minus
times multiplied divided ratio rate rates share shares fraction fractions percentage percent proportion
average avg mean median sum total totals maximum max minimum min highest lowest largest biggest smallest
cheapest dearest priciest greatest least most best worst top bottom big small large cheap expensive high low
above below under over exceeding exceed beyond within at-least or-more or-better or-worse better worse
good bad equal equals exactly approximately around about roughly nearly almost
ones one's somebody's everyone's everything everybody whole entire full complete individual respective
each their own people person persons folks team staff guy guys
yes ok okay sure go went gone come came coming happen happened happening
did does do done make made having hold holding holds held keep kept remain remaining still left
which whichever whatever wherever whenever however
system systems data database table tables warehouse-wide company business our
vs versus against relative compared compare
often frequently usually typically likelihood probability chance odds twice thrice once
behind beside besides beneath near nearby inside outside around among amongst upon toward towards within
throughout underneath alongside onto via along past whose whom someone's anyone's concerned concerning
regarding respectively actually really basically simply currently overall altogether everywhere somewhere
soon asap immediately straight right instantly promptly
"""))

NUMBER_WORDS = {"zero": 0, "one": 1, "single": 1, "a": 1, "an": 1, "two": 2, "couple": 2, "pair": 2, "three": 3,
                "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11,
                "twelve": 12, "dozen": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
                "hundred": 100}
_SCALE = {"thousand": 1_000, "k": 1_000, "million": 1_000_000, "m": 1_000_000, "mio": 1_000_000,
          "billion": 1_000_000_000, "bn": 1_000_000_000}
_UNITS_MIN = {"second": 1 / 60, "minute": 1, "min": 1, "hour": 60, "hr": 60, "day": 1440, "week": 10080}

# ------------------------------------------------------------------------------------------ write intent

#: Verbs that change data when a request gives them as an order (at the start of a clause). A general lexicon
#: of English change verbs; the catalog's own write actions add theirs (:func:`write_intent`'s *extra*).
CHANGE_VERBS = set(_words("""
add adjust amend append archive assign apply approve attach award block book bump cancel change charge clear close
convert correct create credit debit decrease deactivate activate deduct delete demote deny disable discontinue
double downgrade drop edit email empty enable erase fix flag grant halve increase increment decrement insert
invite issue lock log lower mail make mark merge modify move notify nullify open overwrite pay place post
promote publish purge push put raise reassign rebook refund register reject reopen remove rename replace
reprice reset restock restore retire revoke send set ship submit subtract suspend swap switch tag terminate
text transfer truncate turn unlock unset unsubscribe update upgrade upload void wipe write zero blank null
reduce cut trim lift shift discount ban kill nuke scrap strip flush populate fill dedupe deduplicate migrate
renew extend rewrite relabel reclassify recategorise recategorize rebrand overwrite mute unmute pause resume
reactivate unflag unmark untag unblock unarchive mass-update bulk-update sync-to top-up backfill bump ditch
tell inform tick knock slash hike chop
"""))
#: Prefixes that make a change verb of a change verb ("re-open", "unarchive", "deflag", "mis-assign").
_CHANGE_PREFIXES = ("re", "un", "de", "dis", "mis", "over", "under", "pre", "auto", "bulk-", "mass-")
_CHANGE_STEMS = {stem(v) for v in CHANGE_VERBS}
#: Verbs that read (never a write, even at the start of a clause).
READ_VERBS = {stem(v) for v in _words("""
list show give get pull fetch load read display return find look report retrieve extract provide
produce compute calculate count sum total average match compare join combine refresh reload sync-from
which what how who where when export summarise summarize break group rank sort order
""")}
#: Change verbs that are also common nouns or adjectives: an order only when an object follows.
_AMBIGUOUS = set(_words("""
open close record file book post email mail text schedule issue log order transfer credit debit charge ship
place zero blank null lock tag flag mark store save enter set turn empty void swap switch drop copy pay raise
sync make put move clear file award block approve register grant
discount cut trim lift shift ban scrap strip fill flush pause resume kill top-up backfill bump mute extend renew
"""))
#: Verbs that deliver a report to a person ("send me ..."), and verbs that refresh the hub's copy on a schedule.
_DELIVERY = {"send", "email", "mail", "text", "forward", "deliver", "post", "tell", "inform", "notify"}
_REFRESH = {"update", "sync", "reload", "refresh", "copy", "mirror", "replicate"}
_OBJECT_START = {"a", "an", "the", "it", "them", "this", "that", "these", "those", "all", "every", "each", "his",
                 "her", "their", "our", "my", "its", "some", "any", "new", "one", "zero", "up", "down", "off",
                 "out", "in", "back", "him", "me", "us", "everything", "everyone", "both", "no", "only"}
_CLAUSE_START = re.compile(r"(?:^|[,;:.!?]|\b(?:and|then|also|please|and then|so|to|also|you|we|i|let's|"
                           r"let us|just|now|kindly)\b)\s*$", re.IGNORECASE)
#: A schedule written before the order ("every morning log ...", "each Monday at 8 open ..."): what follows
#: starts a clause.
SCHEDULE_LEAD = re.compile(r"\s*(?:(?:every|each)\s+(?:morning|night|evening|day|hour|week|month|weekday|"
                           r"(?:mon|tues|wednes|thurs|fri|satur|sun)day)|daily|hourly|nightly|weekly|monthly)"
                           r"(?:\s+at\s+\d{1,2}(?::\d{2})?\s*(?:am|pm|h)?)?\s*,?\s*", re.IGNORECASE)
_STATE_CHANGE = re.compile(
    r"\b(?:has|have|had)\s+(?:been\s+)?(?:changed|moved|switched|gone|turned)\s+(?:to|into|over to)\b|"
    r"\b(?:get|got|gets|getting) rid of\b|\bdo away with\b|\b(?:throw|wipe|clean|clear|zero|blank|null)"
    r"(?:s|ed|ing)? (?:out|away)\b|\b(?:let|have|make)\s+(?:\w+\s+){1,4}?(?:go|goes)\s+(?:up|down)\b|"
    r"\b(?:go|goes)\s+(?:up|down)\s+by\b|\b(?:is|are)\s+now\b|"
    r"\bgive\s+(?:all|every|each|the|customer|order|product|contact)\s+(?:\w+\s+){0,3}?(?:a|an|the)\s+(?:new\s+)?"
    r"(?:\w+\s+)?(?:tier|status|price|score|rating|label|tag|flag|discount|category|state|value)\b|"
    r"\b(?:want|like|need)\s+(?:\w+\s+){1,5}?to (?:be|become|have|get)\b(?!\s+\w+ed\b)|\blet\s+(?:\w+\s+){1,5}?be\b|"
    r"\btake\s+(?:\S+\s+){1,5}?(?:out of|off)\b|\b(?:strike|cross)\s+(?:\w+\s+){0,4}?(?:off|out)\b|"
    r"\bshould\s+(?:be|become|read|say|show|equal)\b|\b(?:must|needs? to|ought to)\s+"
    r"(?:be|become|read|say|show|appear)\b|\bfrom now on\b|\bhenceforth\b|\bbecomes?\b|\binstead of\b.*\buse\b|"
    r"\b(?:moves|goes|switches|changes|upgrades|downgrades|gets|turns)\s+(?:to|into|over to)\b|"
    r"\b(?:has|have|needs?|is|are) to (?:be|become|get)\b|"
    r"\bshould\s+(?:each\s+|all\s+|also\s+|both\s+)?(?:get|have|go|move|change|receive)\b|"
    r"\b(?:is|are) to be\b|\bwill (?:be|become) (?!\w+ed\b)\w+ (?:from now|starting|as of)\b|"
    # a new value from a date on: "... is billing@acme.example from today", "is 12 as of Monday"
    r"\b(?:is|are|becomes?)\s+\S+\s+(?:from|as of|starting|effective)\s+(?:today|tomorrow|now|monday|tuesday|"
    r"wednesday|thursday|friday|saturday|sunday|next|\d)|"
    # one record's field stated as a value: "customer 42's e-mail is x@y", "order 100045's status is shipped"
    r"\b[a-z]+\s+#?[a-z]*-?\d+'s\s+(?:[\w-]+\s+){1,3}(?:is|are)\s+(?!\w+ed\b)(?![^?]*\?)|"
    # one record needs or gets something: "order 100045 needs the note '...'", "SKU-300 gets 50 more"
    r"^\s*[a-z]+\s+#?[a-z]*-?\d+\s+(?:needs|gets|requires|should get|should have|must have|wants)\b|"
    # a new record given with its fields: "New client for the CRM: Acme Ltd, Berlin, ..."
    r"^\s*(?:(?:there's|there is|here's|here is|we have|we've got|we got)\s+)?(?:a\s+|one\s+)?"
    r"(?:new|another|additional)\b[^:?.]{0,60}:\s*"
    r"(?!how\b|what\b|which\b|who\b|when\b|where\b|count\b|list\b|show\b|total\b|number\b)\S(?![^?]*\?)|"
    # a new name or value, quoted: "the Rotterdam depot goes by 'Rotterdam Hub' these days"
    r"\b(?:goes|go|went|is|are)\s+(?:now\s+)?(?:by|called|named|known as)\s+['\"]|"
    # a record to keep: "please have it on file in the CRM"
    r"\b(?:have|keep|put|get|add)\s+(?:it|them|this|that|him|her)\s+(?:on file|on record|in the system)\b|"
    # an amount to add, as an order: "50 extra units of SKU-300 for the Rotterdam depot, please"
    r"^\s*(?:\d+|a|an|one|two|three|four|five|ten|twenty|fifty|hundred)\s+(?:extra|additional|more|further)\s+"
    r"\w+\s+(?:of|for)\b[^?]*$",
    re.IGNORECASE)


def write_intent(request: str, extra: set[str] | frozenset[str] = frozenset()) -> str | None:
    """What in *request* asks to change data, if anything: a change verb given as an order (at the start of a
    clause: "reset the counters", "..., mark it paid"), a statement of a new state ("X is now Y", "should be
    49.90"), or *extra* stems (the catalog's write actions' verbs). Past participles ("logged", "paid") and
    subordinate clauses ("the bank never paid for") describe data and do not count."""
    text = request.strip()
    m = _STATE_CHANGE.search(text)
    if m:
        return m.group(0).strip().lower()
    words = list(re.finditer(r"[A-Za-z][A-Za-z'-]*", text))
    change = CHANGE_VERBS | set(extra)
    for i, w in enumerate(words):
        raw = w.group(0).lower()
        st = stem(raw)
        # an order is the verb's base form: "active" is no "activate", "logged" and "books" describe the data
        if st in READ_VERBS or (raw not in change and not (
                len(raw) > 5 and any(raw.startswith(p) and raw[len(p):].lstrip("-") in change
                                     for p in _CHANGE_PREFIXES))):
            continue
        before = text[: w.start()]
        if _CLAUSE_START.search(before) or not before.strip() or SCHEDULE_LEAD.fullmatch(before):
            nxt = words[i + 1].group(0).lower() if i + 1 < len(words) else ""
            if raw in _DELIVERY and nxt in ("me", "us", "my", "our", "it", "them", "the team", "a", "an"):
                continue  # "send me the contacts per channel": a report delivered, nothing changed in a system
            if raw in _REFRESH and when(text).schedule and not re.search(
                    r"\b(?:to|as|into|=)\s+(?:\d|'|\"|0|zero|null|empty|blank)|\bwith\b", text[w.end():]):
                continue  # "update the stock figures every hour": the copy refreshed on a schedule
            after = text[w.end():]
            # an order all the same: a thing and its id ("flag order 100005"), or a new state ("... as shipped")
            ordered = bool(re.match(r"\s+[A-Za-z]+\s+#?[A-Za-z]*-?\d+\b", after)) or bool(re.search(
                r"\bas\s+(?:\w+ed|paid|done|open|closed|lost|won|active|inactive|complete)\b", after))
            if raw in _AMBIGUOUS and nxt not in _OBJECT_START and not re.fullmatch(r"\d+", nxt) and not ordered:
                continue  # a noun or adjective here ("open orders", "record count")
            if raw == "make" and nxt in ("a", "an", "me", "us") and re.search(
                    r"\bmake (?:me |us )?(?:a|an) (?:list|report|table|overview|summary|chart|count)\b", text, re.I):
                continue
            return raw
    # "make the gold customers silver", "put a zero in ...": handled above (make/put are change verbs);
    # "... to 0 where ...": a target value after a column, as in "scores to 0"
    if re.search(r"(?<!\bup )(?<!\bclose )(?<!\bcompared )\bto\s+"
                 r"(?:0|zero|null|empty|blank|-?\d+(?:[.,]\d+)?)\s*"
                 r"(?:%|percent|euros?|eur|dollars?|usd)?\s*(?:where|for|if|when|at|in|on|$)", text, re.I) and \
            not re.search(r"\bfrom\s+\S+\s+to\s", text, re.IGNORECASE) and \
            re.match(r"\s*\w+", text) and stem(re.match(r"\s*(\w+)", text).group(1)) not in READ_VERBS:  # type: ignore[union-attr]
        return "set"
    return None


_FLOW = re.compile(r"\b(when|whenever|once|as soon as|each time|every time|after each|after every|if)\b",
                   re.IGNORECASE)


def is_flow(request: str) -> bool:
    """A request whose write is triggered by an event or a condition ("when a payment arrives, mark ..."):
    a write workflow (a flow), not a single write."""
    return bool(_FLOW.search(request))


# -------------------------------------------------------------------------------------------- numbers

@dataclass
class Number:
    value: float
    start: int  # token index
    end: int    # token index, exclusive
    unit: str | None = None  # minute | currency | percent | None

    @property
    def text(self) -> str:
        return str(int(self.value)) if float(self.value).is_integer() else str(self.value)


def numbers(words: list[str]) -> list[Number]:
    """Numbers among *words* (tokens as split by :func:`split_words`, plus decimal points kept by the caller):
    digits, number words, scales ("4 million"), fractions of units ("half an hour" = 30 minutes)."""
    out: list[Number] = []
    i = 0
    while i < len(words):
        w = words[i]
        val: float | None = None
        j = i + 1
        if re.fullmatch(r"\d+(?:\.\d+)?", w):
            val = float(w)
        elif w in NUMBER_WORDS and w not in ("a", "an"):
            val = float(NUMBER_WORDS[w])
        elif w == "half" or w == "quarter":
            frac = 0.5 if w == "half" else 0.25
            k = j + (1 if j < len(words) and words[j] == "of" else 0)  # "a quarter of an hour" = 15 minutes
            k += 1 if k < len(words) and words[k] in ("a", "an") else 0
            if k < len(words) and stem(words[k]) in _UNITS_MIN:
                out.append(Number(frac * _UNITS_MIN[stem(words[k])], i, k + 1, "minute"))
                i = k + 1
                continue
        elif w in ("a", "an") and j < len(words) and stem(words[j]) in ("hour", "day", "week") and \
                not (i > 0 and words[i - 1] in ("per", "every", "each")):
            out.append(Number(_UNITS_MIN[stem(words[j])], i, j + 1, "minute"))
            i = j + 1
            continue
        if val is None:
            i += 1
            continue
        if j < len(words) and words[j] in _SCALE:
            val *= _SCALE[words[j]]
            j += 1
        unit = None
        if j < len(words) and stem(words[j]) in _UNITS_MIN:
            val *= _UNITS_MIN[stem(words[j])]
            unit = "minute"
            j += 1
        elif j < len(words) and words[j] in ("percent", "pct"):
            unit = "percent"
            j += 1
        elif j < len(words) and stem(words[j]) in ("euro", "eur", "dollar", "usd", "pound", "gbp", "chf"):
            unit = "currency"
            j += 1
        out.append(Number(val, i, j, unit))
        i = j
    return out


# ----------------------------------------------------------------------------------------- comparisons

@dataclass
class Comparison:
    op: str           # > >= < <= = <>
    value: str        # a number (as text) or an ISO date
    start: int        # token span of the phrase (number included)
    end: int
    unit: str | None = None
    is_date: bool = False


_GT = ("more than", "greater than", "higher than", "larger than", "bigger than", "over", "above", "exceeding",
       "in excess of", "beyond", "longer than", "later than", "after", "newer than")
_GE = ("at least", "no less than", "not less than", "minimum of", "from", "since")
_LT = ("less than", "fewer than", "lower than", "smaller than", "cheaper than", "under", "below", "shorter than",
       "earlier than", "before", "older than", "up to")
_LE = ("at most", "no more than", "not more than", "maximum of", "up to and including")
_MONTHS = {m: i for i, m in enumerate(["january", "february", "march", "april", "may", "june", "july", "august",
                                       "september", "october", "november", "december"], 1)}


_QUARTER_ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4}


def plain_numbers(text: str) -> str:
    """*text* with thousands separators dropped: "150,000" is one number, not a list of two."""
    return re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)


def _date_at(words: list[str], k: int) -> tuple[str, int] | None:
    """An ISO date starting at token *k* ("2022", "the middle of 2023", "march 2023", "2023-07-01")."""
    j = k
    if j < len(words) and words[j] == "the":
        j += 1
    part = None
    if j < len(words) and words[j] in ("middle", "mid", "start", "beginning", "end"):
        part = words[j]
        j += 1
        if j < len(words) and words[j] == "of":
            j += 1
    month = None
    if j < len(words) and words[j] in _MONTHS:
        month = _MONTHS[words[j]]
        j += 1
    if j < len(words) and re.fullmatch(r"(19|20)\d\d", words[j]):
        year = int(words[j])
        j += 1
        if j + 1 < len(words) and re.fullmatch(r"\d\d?", words[j]) and re.fullmatch(r"\d\d?", words[j + 1]):
            return f"{year:04d}-{int(words[j]):02d}-{int(words[j + 1]):02d}", j + 2
        if month and part == "end":  # the end of March: the first of April
            return f"{year + (month == 12):04d}-{month % 12 + 1:02d}-01", j
        if month and part in ("middle", "mid"):
            return f"{year:04d}-{month:02d}-15", j
        if month:
            return f"{year:04d}-{month:02d}-01", j
        if part in ("middle", "mid"):
            return f"{year:04d}-07-01", j
        if part == "end":
            return f"{year + 1:04d}-01-01", j
        return f"{year:04d}-01-01", j
    return None


def comparisons(words: list[str], nums: list[Number]) -> list[Comparison]:
    """Comparisons in words: "under 20", "at least 4 million", "8 or more", "4 or better", "before 2022",
    "not ... since the middle of 2023" (older than), "between 10 and 20"."""
    out: list[Comparison] = []
    text_at = [" ".join(words[: i]) for i in range(len(words) + 1)]
    by_start = {n.start: n for n in nums}
    for n in nums:
        after = " ".join(words[n.end: n.end + 2])
        before = text_at[n.start]
        op = None
        start = n.start
        for phrases, o in ((_LE, "<="), (_GE, ">="), (_GT, ">"), (_LT, "<")):
            for p in sorted(phrases, key=len, reverse=True):
                if before.endswith(" " + p) or before == p:
                    op, start = o, n.start - len(p.split())
                    break
            if op:
                break
        end = n.end
        if op is None and re.match(r"or (more|higher|above|better|greater|over|later|longer)\b", after):
            op, end = ">=", n.end + 2
        elif op is None and re.match(r"or (less|fewer|lower|below|worse|under|cheaper|earlier|shorter)\b", after):
            op, end = "<=", n.end + 2
        elif op is None and before.endswith(("exactly", "equal to", "equals", "of exactly")):
            op = "="
        elif op is None and before.endswith("between"):
            m2 = [x for x in nums if x.start > n.end and " ".join(words[n.end: x.start]) in ("and", "to")]
            if m2:
                out.append(Comparison(">=", n.text, n.start - 1, n.end, n.unit))
                out.append(Comparison("<=", m2[0].text, m2[0].start, m2[0].end, m2[0].unit))
                continue
        if op is None:
            continue
        if re.fullmatch(r"(19|20)\d\d", words[n.start]) and n.unit is None and op in (">", "<", ">=", "<=") and \
                before.split()[-1:] and before.split()[-1] in ("before", "after", "since", "from", "until"):
            continue  # a year: handled as a date below
        if start > 0 and words[start - 1] == "not":
            op = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}.get(op, op)
            start -= 1
        out.append(Comparison(op, n.text, start, end, n.unit))
    del by_start
    # quarters: "in the fourth quarter of 2023", "Q1 2024": from its first day to the next quarter's
    for i, w in enumerate(words):
        q, j = (int(w[1]), i + 1) if re.fullmatch(r"q[1-4]", w) else (
            (_QUARTER_ORDINALS[w], i + 2) if w in _QUARTER_ORDINALS and words[i + 1: i + 2] == ["quarter"] else (0, 0))
        if not q:
            continue
        j += 1 if j < len(words) and words[j] in ("of", "in") else 0
        if j < len(words) and re.fullmatch(r"(19|20)\d\d", words[j]):
            y, start = int(words[j]), i - (1 if i > 0 and words[i - 1] == "the" else 0)
            start -= 1 if start > 0 and words[start - 1] in ("in", "during", "throughout") else 0
            nxt = f"{y + 1:04d}-01-01" if q == 4 else f"{y:04d}-{3 * q + 1:02d}-01"
            out.append(Comparison(">=", f"{y:04d}-{3 * q - 2:02d}-01", start, j + 1, None, is_date=True))
            out.append(Comparison("<", nxt, start, j + 1, None, is_date=True))
    # dates: before/after/since/until/older than <date>; "in 2023", "during March 2023": that year or month
    for i, w in enumerate(words):
        if w in ("in", "during", "throughout") and i + 1 < len(words) and (
                re.fullmatch(r"(19|20)\d\d", words[i + 1]) or (words[i + 1] in _MONTHS and i + 2 < len(words)
                                                               and re.fullmatch(r"(19|20)\d\d", words[i + 2]))):
            d = _date_at(words, i + 1)
            if d is not None:
                iso, end = d
                y, mo, _day = (int(x) for x in iso.split("-"))
                whole_year = words[i + 1] not in _MONTHS
                nxt = f"{y + 1:04d}-01-01" if whole_year else f"{y + (mo == 12):04d}-{mo % 12 + 1:02d}-01"
                out.append(Comparison(">=", iso, i, end, None, is_date=True))
                out.append(Comparison("<", nxt, i, end, None, is_date=True))
            continue
        if w not in ("before", "after", "since", "until", "till", "from", "than"):
            continue
        d = _date_at(words, i + 1)
        if d is None:
            continue
        iso, end = d
        op = {"before": "<", "until": "<", "till": "<", "after": ">=", "since": ">=", "from": ">="}.get(w, "<")
        if w == "after":  # after March 2023: from April; after 2022: from 2023
            y, mo, day = (int(x) for x in iso.split("-"))
            named = words[i + 1: end]
            if any(x in _MONTHS for x in named) and day == 1:
                iso = f"{y + (mo == 12):04d}-{mo % 12 + 1:02d}-01"
            elif mo == 1 and day == 1 and not any(x in ("start", "beginning") for x in named):
                iso = f"{y + 1:04d}-01-01"
        if w == "than":
            op = "<" if i > 0 and words[i - 1] in ("earlier", "older") else ">="
        # "not touched since X": nothing since X -> before X
        neg = any(x in ("not", "never", "no", "nobody", "none", "nothing", "noone") or x.endswith("n't")
                  for x in words[max(0, i - 4): i])
        if neg and op == ">=":
            op = "<"
        out.append(Comparison(op, iso, i, end, None, is_date=True))
    return out


# ------------------------------------------------------------------------------------- top-N, ordering

_DESC = {"biggest", "largest", "highest", "most", "top", "greatest", "best", "priciest", "dearest", "longest",
         "latest", "newest", "heaviest", "busiest", "richest", "maximum", "max", "leading"}
_ASC = {"smallest", "lowest", "least", "cheapest", "fewest", "worst", "shortest", "earliest", "oldest", "minimum",
        "min", "bottom", "lightest", "poorest"}


#: Words in -est that are no superlatives.
_NOT_SUPERLATIVE = {"interest", "request", "forest", "guest", "honest", "modest", "suggest", "digest", "invest",
                    "harvest", "protest", "contest", "manifest", "earnest", "arrest", "attest", "detest", "behest",
                    "conquest", "inquest", "bequest", "midwest", "northwest", "southwest", "latest"}
#: Adjectives whose superlative ranks from the bottom ("the slowest", "the poorest").
_LOW = ("small", "low", "few", "cheap", "short", "early", "light", "poor", "slow", "weak", "thin", "narrow",
        "scarce", "rare", "quiet", "small", "tin", "least")


def _superlative(word: str) -> str | None:
    """"desc" or "asc" when *word* is a superlative adjective in -est ("the wealthiest", "the slowest"),
    ranking from the top unless its base means little; None otherwise."""
    if len(word) < 6 or not word.endswith("est") or word in _NOT_SUPERLATIVE:
        return None
    base = word[:-4] + "y" if word.endswith("iest") else word[:-3]
    return "asc" if base.startswith(_LOW) or word.removesuffix("est").startswith(_LOW) else "desc"


@dataclass
class TopN:
    n: int | None       # None: ordering only
    desc: bool
    word: str           # the superlative ("cheapest", "most")
    at: int             # its token index
    by_at: int | None = None  # token index of "by X" naming the ordering measure, when given


def top_n(words: list[str], nums: list[Number], used: set[int]) -> TopN | None:
    """"the 5 biggest ... by spend", "top 10", "which three items sold the most units", "the single depot
    holding the most"; *used*: tokens of numbers already read as comparisons."""
    sup = next(((i, w) for i, w in enumerate(words) if w in _DESC or w in _ASC or _superlative(w)), None)
    if sup is None:
        if re.search(r"\b(sorted|ordered|ranked) by\b", " ".join(words)):
            i = words.index("by")
            return TopN(None, "descending" in words or "desc" in words, "by", i, i)
        return None
    i, w = sup
    if w in ("most", "least") and i > 0 and words[i - 1] in ("at",):
        return None  # "at least" / "at most": comparisons
    if w in ("top", "bottom") and i + 1 < len(words) and words[i + 1] in ("of",):
        return None
    n = None
    for num in nums:
        if num.start in used:
            continue
        named_before = num.end <= i and any(x in ("which", "the", "our", "top", "what")
                                            for x in words[max(0, num.start - 2): num.start])
        if (num.end <= i and i - num.end <= 2) or (w in ("top", "bottom") and num.start == i + 1) or named_before:
            n = int(num.value)
    if n is None and w in ("latest", "newest") and any(
            re.fullmatch(r"[a-z]{3,}[^s']s", x) for x in words[i + 1: i + 4]):
        return None  # "the latest stock figures": the current rows, not a ranking
    asked = next((k for k in range(max(0, i - 5), i) if words[k] in ("which", "what")), None)
    if n is None and asked is not None and asked + 1 < i and re.fullmatch(r"[a-z]{3,}[^s]s", words[asked + 1]):
        n = None  # "which clients paid the most": every client, ranked
    elif n is None and any(x in ("the", "which") for x in words[max(0, i - 2): i]):
        n = 1 if not any(words[k].endswith("s") and len(words[k]) > 3 and words[k] not in FILLER
                         for k in range(i + 1, min(len(words), i + 3))) else None
    if n is None and "single" in words[max(0, i - 4): i]:
        n = 1
    by_at = next((k for k in range(i + 1, len(words)) if words[k] == "by"), None)
    return TopN(n, w in _DESC or (w not in _ASC and _superlative(w) != "asc"), w, i, by_at)


# ------------------------------------------------------------------------------------------- negations

NEGATIONS = {"without", "never", "no", "not", "nobody", "none", "lacking", "missing", "neither", "nor",
             "haven't", "hasn't", "didn't", "doesn't", "don't", "wasn't", "weren't", "unpaid", "excluding",
             "except", "minus"}


def negation_positions(words: list[str]) -> list[int]:
    return [i for i, w in enumerate(words) if w in NEGATIONS or w.endswith("n't")]


# ------------------------------------------------------------------------------------- derived measures

_ARITH = {"times": "*", "multiplied": "*", "x": "*", "by-times": "*", "divided": "/", "over": "/", "minus": "-",
          "less": "-", "plus": "+"}


@dataclass
class Arithmetic:
    op: str
    at: int  # token index of the operator word


def arithmetic(words: list[str]) -> list[Arithmetic]:
    """"price times quantity", "quantity multiplied by unit price", "amount minus received"."""
    out = []
    for i, w in enumerate(words):
        inner = 0 < i < len(words) - 1
        if w in ("times", "multiplied", "divided") or (w in ("x", "minus", "plus") and inner):
            out.append(Arithmetic(_ARITH[w], i))
    return out


# ----------------------------------------------------------------------------------------- time words

@dataclass
class When:
    grain: str | None = None        # day | week | month (grouping)
    partitions: str | None = None   # daily | monthly
    schedule: str | None = None
    notes: list[str] = field(default_factory=list)


_SCHEDULE_UNIT = {"second", "seconds", "minute", "minutes", "min", "mins", "hour", "hours", "day", "days", "week",
                  "weeks", "month", "months", "morning", "mornings", "night", "nights", "evening", "evenings",
                  "weekday", "weekdays", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                  "sunday", "mondays", "tuesdays", "wednesdays", "thursdays", "fridays", "saturdays", "sundays"}


_DAY = r"(?:mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)(?:day)?"
_DAY_RANGE = re.compile(rf"{_DAY}-{_DAY}")


def schedule_positions(words: list[str]) -> set[int]:
    """Token positions that only say when to run ("every 30 minutes", "each Monday at 8", "at 17 00 h"): they
    name no field, even when a column is named after the same unit (``duration_minutes``)."""
    out: set[int] = set()
    for i, w in enumerate(words):
        if w in ("every", "each"):
            j = i + 1
            if j < len(words) and re.fullmatch(r"\d+|other|two|three|four|five|six|ten|fifteen|thirty", words[j]):
                j += 1
            if j < len(words) and words[j] in _SCHEDULE_UNIT:
                out |= set(range(i, j + 1))
        elif _DAY_RANGE.fullmatch(w):  # "Mon-Fri", "mon-sat": days of the week to run on
            out.add(i)
        elif w == "at" and i + 1 < len(words) and re.fullmatch(r"\d{1,2}", words[i + 1]):
            j = i + 2
            if j < len(words) and re.fullmatch(r"\d\d", words[j]):
                j += 1
            if j < len(words) and words[j] in ("am", "pm", "h", "o'clock", "oclock", "sharp"):
                j += 1
            out |= set(range(i, j))
    return out


_DOW = {"sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6}


def when(request: str) -> When:
    """Grain, partitioning and schedule of a request: "per month" / "monthly" -> monthly partitions and a
    month grain; "per day"/"daily"/"yesterday" -> daily; "every Monday at 8" -> ``0 8 * * 1``; "every hour" ->
    ``0 * * * *``; "every 15 minutes" -> ``*/15 * * * *``."""
    text = request.lower()
    out = When()
    grain_at = -1
    for grain in re.finditer(r"\b(?:per|by|each|every|a)\s+(day|week|month|year|quarter)\b|\b(daily|weekly|monthly|"
                             r"yearly|quarterly)\b", text):
        before = text[: grain.start()].split()[-2:]
        if re.match(r"\s+of\s+an?\s+(?:hour|day|minute|week|year)", text[grain.end():]):
            continue  # "a quarter of an hour": a duration, not a quarterly grain
        # "4 million a year", "50 euros per month": a rate of the amount before it, not a grain
        if grain.group(1) and any(re.fullmatch(r"\d+(?:[.,]\d+)?|" + "|".join(_SCALE) + r"|euros?|eur|dollars?|usd|"
                                               r"units?|pieces?|times", w) for w in before):
            continue
        g = grain.group(1) or {"daily": "day", "weekly": "week", "monthly": "month", "yearly": "year",
                               "quarterly": "quarter"}[grain.group(2)]
        # "every day" / "every week" alone is a schedule ("on the first of each month, build a monthly
        # breakdown": the schedule, then the grain); "per"/"by" asks for a grain
        counted = re.search(r"\b(how many|number of|count|total|sum|average|mean|avg)\b", text[: grain.start()])
        if (grain.group(1) and text[grain.start():].startswith(("per", "by", "a "))) or grain.group(2) or (
                counted and grain.start() > 0 and g in ("week", "month", "year", "quarter")):
            out.grain = g  # "how many customers signed up each month": counted per month, not run monthly
            grain_at = grain.start()
            break
    hour_of_day = re.search(r"\b(?:hour|time) of (?:the )?day\b|\bhourly (?:breakdown|split|profile)\b", text)
    if out.grain is None and hour_of_day:
        out.grain = "hour"  # "in each hour of the day": grouped by the hour the rows happened at
    if out.grain in ("month", "quarter", "year"):
        out.partitions = "monthly"
    elif re.search(r"\b(yesterday|today|daily|every day|each day|per day|by day|a day|every morning|every night|"
                   r"nightly|last week|past week|last 7 days|day|days|morning)\b", text):
        out.partitions = "daily"
    if re.search(r"\b(last week|past week|last 7 days)\b", text):
        out.notes.append("last week: run the last 7 daily partitions (hub run SPEC --from D-7 --to D-1)")
    elif "yesterday" in text:
        out.notes.append("yesterday: each run loads the latest complete daily partition (the day before)")
    at = re.search(r"\bat\s+(\d{1,2})(?:[:.](\d\d))?\s*(am|pm|h|o'clock)?\b", text)
    hour = minute = None
    if at:
        hour = int(at.group(1)) % 24
        afternoon = re.search(r"\b(afternoon|evening)s?\b", text) or (re.search(r"\bnights?\b", text) and hour >= 7)
        if (at.group(3) == "pm" or (afternoon and at.group(3) != "am")) and hour < 12:
            hour += 12
        minute = int(at.group(2) or 0)
    elif re.search(r"\b(?:at )?(noon|midday|midnight)\b", text):
        hour, minute = (0 if "midnight" in text else 12), 0
    hh = lambda default: hour if hour is not None else default  # noqa: E731
    mm = minute or 0
    words_n = "|".join(k for k in NUMBER_WORDS if k not in ("a", "an", "single", "one"))
    every_n = re.search(rf"\bevery\s+(\d+|{words_n}|other|half an?|half|quarter of an?|quarter)\s+"
                        r"(minute|min|hour)s?\b", text)
    dow: int | str | None = next((d for name, d in _DOW.items()
                                  if re.search(rf"\b(every|each|on)\s+{name}s?\b|\b{name}s\b", text)), None)
    if re.search(r"\b(every|each|on)\s+(week ?day|working day|business day)s?\b|\bweekdays\b|\bmonday (?:to|through|-)"
                 r" friday\b|\bmon ?- ?fri\b", text):
        dow = "1-5"
    elif re.search(r"\b(every|each|on|at)\s+(the\s+)?weekends?\b|\bweekends\b", text):
        dow = "0,6"
    if every_n:
        k, minutes = every_n.group(1), every_n.group(2).startswith("min")
        n = int(k) if k.isdigit() else 2 if k == "other" else NUMBER_WORDS.get(k, 0)
        if k.startswith(("half", "quarter")):  # every half hour, every quarter of an hour
            n, minutes = (30 if k.startswith("half") else 15), True
        n = max(1, n)
        out.schedule = f"*/{n} * * * *" if minutes else f"0 */{n} * * *"
    elif re.search(r"\b(every|each)\s+hour\b|\bhourly\b", text) and not hour_of_day:
        out.schedule = "0 * * * *"
    elif dow is not None:
        out.schedule = f"{mm} {hh(6)} * * {dow}"
    elif re.search(r"\b(every|each) morning\b", text):
        out.schedule = f"{mm} {hh(6)} * * *"
    elif re.search(r"\b(every|each) (night|evening)\b|\bnightly\b", text):
        out.schedule = f"{mm} {hh(2)} * * *"
    elif re.search(r"\b(every|each) week\b|\bweekly\b", text) and out.grain != "week" and \
            not re.search(r"\bweekly\s+\w+\s+(of|per|by)\b", text):
        out.schedule = f"{mm} {hh(6)} * * 1"
    elif (each_month := re.search(r"\b(every|each) month\b|\bmonthly\b", text)) and (
            out.grain != "month" or each_month.start() != grain_at):
        dom = re.search(r"\b(first|last|\d{1,2})(?:st|nd|rd|th)? (?:day )?of (?:the |each |every )?month\b", text)
        day = "1" if not dom or dom.group(1) == "first" else "L" if dom.group(1) == "last" else dom.group(1)
        out.schedule = f"{mm} {hh(6)} {day} * *"
    elif re.search(r"\b(every|each) day\b|\bdaily\b", text) or (hour is not None and re.search(r"\bevery\b", text)):
        out.schedule = f"{mm} {hh(6)} * * *"
    if out.grain == "week" and re.search(r"\bweekly\b", text) and out.schedule and out.schedule.endswith("* * 1"):
        out.schedule = None  # "weekly count": a grain, not a weekly run
    return out


__all__ = ["FILLER", "THESAURUS", "Comparison", "Number", "TopN", "When", "arithmetic", "comparisons",
           "is_flow", "negation_positions", "numbers", "plain_numbers", "related",
           "schedule_positions", "split_words", "stem", "stems",
           "top_n", "when", "write_intent"]
