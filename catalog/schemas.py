"""The contract's JSON shapes as OpenAPI components (documentation only; serialize.py builds the bodies)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from sanic_ext import openapi


@openapi.component
@dataclass
class Category:
    id: int
    name: str
    description: Optional[str]


@openapi.component
@dataclass
class Review:
    id: int
    user_id: int
    rating: int
    comment: Optional[str]
    created_at: datetime


@openapi.component
@dataclass
class Inventory:
    quantity: int
    reserved: int
    available: int
    in_stock: bool


@openapi.component
@dataclass
class Product:
    id: int
    name: str
    description: Optional[str]
    price: float
    category_id: Optional[int]
    is_active: bool
    created_at: datetime
    category: Optional[Category]
    reviews: list[Review]
    inventory: Optional[Inventory]
    average_rating: Optional[float]
    review_count: int


@openapi.component
@dataclass
class ProductList:
    items: list[Product]
    total: int
    page: int
    page_size: int
    total_pages: int


@openapi.component
@dataclass
class ReviewList:
    items: list[Review]
    total: int
    page: int
    page_size: int
    total_pages: int


@openapi.component
@dataclass
class ProductCreate:
    name: str
    price: float
    description: Optional[str] = None
    category_id: Optional[int] = None


@openapi.component
@dataclass
class ProductUpdate:
    name: Optional[str] = None
    description: Optional[str] = None
    price: Optional[float] = None
    category_id: Optional[int] = None
    is_active: Optional[bool] = None


@openapi.component
@dataclass
class ErrorItem:
    loc: list[str]
    msg: str
    type: str


@openapi.component
@dataclass
class ValidationErrorBody:
    detail: list[ErrorItem]


@openapi.component
@dataclass
class ErrorBody:
    detail: str


@openapi.component
@dataclass
class Health:
    status: str


@openapi.component
@dataclass
class Readiness:
    status: str
    postgres: str
    cache: str
    cache_backend: str
