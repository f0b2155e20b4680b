"""How the offline planner reads requests (hub.agent.understand): numbers, comparisons, top-N, grains and
schedules, and write intent without a fixed verb list. Pure text, no estate."""

from __future__ import annotations

import pytest

from hub.agent.understand import comparisons, is_flow, numbers, schedule_positions, top_n, when, write_intent


def _cmp(text: str) -> list[tuple[str, str]]:
    words = text.lower().split()
    return [(c.op, c.value) for c in comparisons(words, numbers(words))]


@pytest.mark.parametrize(("text", "want"), [
    ("orders under 20", [("<", "20")]),
    ("customers with at least 500 orders", [(">=", "500")]),
    ("calls lasting more than half an hour", [(">", "30")]),
    ("lines of 8 or more pieces", [(">=", "8")]),
    ("ratings of 4 or better", [(">=", "4")]),
    ("revenue of at least 4 million", [(">=", "4000000")]),
    ("no more than 12 units", [("<=", "12")]),
    ("products not updated since the middle of 2023", [("<", "2023-07-01")]),
    ("accounts created before 2022", [("<", "2022-01-01")]),
    ("products changed in 2023", [(">=", "2023-01-01"), ("<", "2024-01-01")]),
    ("customers who joined during march 2023", [(">=", "2023-03-01"), ("<", "2023-04-01")]),
    ("orders between 100 and 300 euros", [(">=", "100"), ("<=", "300")]),
    ("chats that lasted a quarter of an hour or less", [("<=", "15")]),
    ("products changed in the fourth quarter of 2023", [(">=", "2023-10-01"), ("<", "2024-01-01")]),
    ("orders in q1 2024", [(">=", "2024-01-01"), ("<", "2024-04-01")]),
])
def test_comparisons_in_words(text: str, want: list[tuple[str, str]]) -> None:
    assert _cmp(text) == want


def test_top_n_and_ordering() -> None:
    words = ["the", "5", "biggest", "suppliers", "by", "spend"]
    t = top_n(words, numbers(words), set())
    assert t is not None and t.n == 5 and t.desc and t.by_at == 4
    words = ["the", "three", "cheapest", "products"]
    t = top_n(words, numbers(words), set())
    assert t is not None and t.n == 3 and not t.desc
    words = ["the", "single", "depot", "holding", "the", "most", "stock"]
    t = top_n(words, numbers(words), set())
    assert t is not None and t.n == 1 and t.desc
    words = ["orders", "of", "at", "least", "5", "items"]  # "at least" is a comparison, no ranking
    assert top_n(words, numbers(words), {1}) is None
    words = ["which", "clients", "paid", "the", "most", "last", "week"]  # a plural subject: all of them, ranked
    t = top_n(words, numbers(words), set())
    assert t is not None and t.n is None and t.desc
    words = ["which", "product", "is", "the", "most", "expensive"]
    t = top_n(words, numbers(words), set())
    assert t is not None and t.n == 1
    # any superlative in -est ranks, from the bottom when its adjective means little
    words = ["the", "5", "wealthiest", "accounts", "by", "annual", "revenue"]
    t = top_n(words, numbers(words), set())
    assert t is not None and t.n == 5 and t.desc and t.by_at == 4
    words = ["the", "slowest", "depot"]
    t = top_n(words, numbers(words), set())
    assert t is not None and not t.desc
    words = ["orders", "of", "interest"]  # -est without a superlative
    assert top_n(words, numbers(words), set()) is None
    # "the latest figures": the current rows, no ranking; "the latest order" is one
    words = ["grab", "the", "latest", "stock", "figures", "every", "quarter", "of", "an", "hour"]
    assert top_n(words, numbers(words), set()) is None
    words = ["the", "latest", "order"]
    t = top_n(words, numbers(words), set())
    assert t is not None and t.n == 1


@pytest.mark.parametrize(("text", "want"), [
    ("refresh the depots every 30 minutes", {3, 4, 5}),
    ("every friday at 17 00 the order total", {0, 1, 2, 3, 4}),
    ("each day the interactions per channel", {0, 1}),
    ("orders that took 30 minutes", set()),  # a duration in the data, not a schedule
])
def test_schedule_words_name_no_field(text: str, want: set[int]) -> None:
    assert schedule_positions(text.split()) == want


def test_grains_and_schedules() -> None:
    assert when("revenue per month by region").grain == "month"
    assert when("revenue per month by region").partitions == "monthly"
    assert when("orders per day").partitions == "daily"
    assert when("every Monday at 8 the contacts").schedule == "0 8 * * 1"
    assert when("refresh the stock every hour").schedule == "0 * * * *"
    assert when("every 15 minutes load the levels").schedule == "*/15 * * * *"
    assert when("every night at 23:30 load the contacts").schedule == "30 23 * * *"
    assert when("every weekday at 7 the open orders").schedule == "0 7 * * 1-5"
    assert when("on weekends at noon the contacts").schedule == "0 12 * * 0,6"
    assert when("every evening at 6 the payments").schedule == "0 18 * * *"
    assert when("every two hours the stock").schedule == "0 */2 * * *"
    assert when("every half hour the stock").schedule == "*/30 * * * *"
    assert when("each Monday at 8.30 the contacts").schedule == "30 8 * * 1"
    # a schedule phrase first, then the grain: both are read
    w = when("On the first of each month at 3 am, build a monthly breakdown of touchpoints by channel")
    assert (w.grain, w.partitions, w.schedule) == ("month", "monthly", "0 3 1 * *")
    assert when("on the 15th of each month at 6 load the orders").schedule == "0 6 15 * *"
    assert when("Mon-Fri at 5:30 in the morning refresh the contacts").schedule == "30 5 * * 1-5"
    assert schedule_positions(["mon-fri", "at", "5", "30"]) == {0, 1, 2, 3}


def test_dates_in_words() -> None:
    assert _cmp("products nobody has updated since the end of march 2023") == [("<", "2023-04-01")]
    assert _cmp("accounts with revenue of no more than 150000") == [("<=", "150000")]


@pytest.mark.parametrize("request_text", [
    "reset the counters to 0 where the outcome was lost",
    "make the gold customers silver",
    "the email of customer 7 is now a@b.example",
    "the price of SKU-00001 should be 49.90",
    "put a zero in the stock of every item",
    "please archive the cancelled orders",
    "when a payment arrives, flag the order as settled",
    "customer 42's region has changed to APAC",
    "get rid of the lost interactions",
    "let the catalogue prices go up by 10 percent",
    "all open orders need to be cancelled",
    "zero out the stock of SKU-100 in every depot",
    "unarchive the old contacts",
    "reopen the cancelled orders of customer 9",
    "give customer 5 the gold tier",
    "I want the gold customers to be silver",
    "take SKU-00003 out of the catalogue",
    "please flag order 100005 as shipped",
    "50 extra units of SKU-300 for the Rotterdam depot, please.",
    "New client for the CRM: Acme Ltd, Berlin, EMEA region, bronze tier.",
    "Customer 42's e-mail address is billing@acme.example from today.",
    "Order 100045 needs the note 'leave at reception' on it.",
    "unpaid orders should each get a reminder task in the CRM",
    "the customer withdrew order 100045, so it ought to show as cancelled in the ERP",
    "the Rotterdam depot goes by 'Rotterdam Hub' these days",
    "there's a new account: Acme Ltd from Denver, gold tier, please have it on file in the CRM",
])
def test_writes_without_the_usual_verbs_are_seen(request_text: str) -> None:
    assert write_intent(request_text) is not None


@pytest.mark.parametrize("request_text", [
    "open orders per region",
    "orders the bank never paid for",
    "contacts our sales people logged yesterday",
    "refresh the stock figures every hour",
    "match the bank's payments to the orders they settle",
    "record count per channel",
    "make me a list of the gold customers",
    "return the orders of customer 9",
    "report the contacts per channel",
    "display the depots",
    "orders whose status went from open to shipped",
    "every Monday at 8 send me the number of contacts per channel",
    "update the stock figures every hour",
    "give me the orders to be shipped",
    "new customers: how many per month",
    "customer 42's tier is gold?",
    "new customers per region",
    "orders with the note 'call first' now",
    "what is the depot in Rotterdam called",
])
def test_reads_are_not_writes(request_text: str) -> None:
    assert write_intent(request_text) is None


def test_flows_are_told_apart() -> None:
    assert is_flow("when a payment arrives for an order, mark it paid")
    assert not is_flow("make the gold customers silver")


def test_a_quarter_of_an_hour_is_a_duration_and_hours_of_the_day_a_grain() -> None:
    w = when("email or chat conversations that lasted a quarter of an hour or less")
    assert w.grain is None and w.partitions != "monthly"  # no quarterly grain
    w = when("How many interactions did we have with clients in each hour of the day?")
    assert w.grain == "hour" and w.schedule is None  # grouped by hour, not run hourly
    assert when("refresh the contacts every hour").schedule == "0 * * * *"
