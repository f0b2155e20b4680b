"""The demo CRM's product catalogue: a GraphQL API (``POST /api/graphql`` on the CRM, same bearer token).

Products page as a Relay connection (``products(first, after, category)`` with ``pageInfo``), the shape of
Shopify's and GitHub's APIs; ``product(sku)`` reads one, and the mutation ``setProductPrice`` is the write an
agent must never send unapproved. Executed by graphql-core against :data:`SDL`; a test may serve another
SDL (a field removed, a type changed) to see the contract tests fail.

Data are deterministic (seeded), like the rest of the estate.
"""

from __future__ import annotations

import base64
import random
from typing import Any

from graphql import GraphQLSchema, build_schema

SDL = '''
"""The CRM's product catalogue."""
type Query {
  """Products, in SKU order, as a Relay connection."""
  products(first: Int = 20, after: String, category: String): ProductConnection!
  """One product by SKU."""
  product(sku: String!): Product
}

type Mutation {
  """Change a product's list price."""
  setProductPrice(sku: String!, price: Float!): Product
}

type ProductConnection {
  nodes: [Product!]!
  pageInfo: PageInfo!
  totalCount: Int!
}

type PageInfo {
  hasNextPage: Boolean!
  endCursor: String
}

type Product {
  sku: String!
  name: String!
  category: String!
  price: Float!
  currency: String!
  active: Boolean!
  updatedAt: String!
}
'''

CATEGORIES = ["hardware", "software", "service", "spare part"]


def products(n: int = 120) -> list[dict[str, Any]]:
    rng = random.Random(11)
    out = []
    for i in range(1, n + 1):
        category = CATEGORIES[i % len(CATEGORIES)]
        out.append({"sku": f"SKU-{i:05d}", "name": f"{category.title()} item {i}", "category": category,
                    "price": round(rng.uniform(5, 2_500), 2), "currency": "EUR", "active": rng.random() > 0.1,
                    "updatedAt": f"2023-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T08:00:00Z"})
    return out


def _cursor(i: int) -> str:
    return base64.b64encode(f"product:{i}".encode()).decode()


def _position(cursor: str) -> int:
    try:
        return int(base64.b64decode(cursor.encode()).decode().split(":", 1)[1])
    except (ValueError, IndexError):
        raise ValueError(f"invalid cursor {cursor!r}") from None


def schema(rows: list[dict[str, Any]], sdl: str = SDL) -> GraphQLSchema:
    """An executable schema over *rows* (kept by reference: a price set by the mutation stays set)."""
    built = build_schema(sdl)
    by_sku = {r["sku"]: r for r in rows}

    def resolve_products(_root: Any, _info: Any, first: int | None = 20, after: str | None = None,
                         category: str | None = None) -> dict[str, Any]:
        first = max(0, min(first if first is not None else 20, 100))
        chosen = [r for r in rows if category is None or r["category"] == category]
        start = _position(after) + 1 if after else 0
        page = chosen[start:start + first]
        end = start + len(page) - 1
        return {"nodes": page, "totalCount": len(chosen),
                "pageInfo": {"hasNextPage": start + len(page) < len(chosen),
                             "endCursor": _cursor(end) if page else None}}

    def resolve_product(_root: Any, _info: Any, sku: str) -> dict[str, Any] | None:
        return by_sku.get(sku)

    def resolve_set_price(_root: Any, _info: Any, sku: str, price: float) -> dict[str, Any] | None:
        row = by_sku.get(sku)
        if row is not None:
            row["price"] = price
        return row

    query, mutation = built.query_type, built.mutation_type
    if query is not None:
        if "products" in query.fields:
            query.fields["products"].resolve = resolve_products
        if "product" in query.fields:
            query.fields["product"].resolve = resolve_product
    if mutation is not None and "setProductPrice" in mutation.fields:
        mutation.fields["setProductPrice"].resolve = resolve_set_price
    return built
