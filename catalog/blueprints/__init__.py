"""One blueprint per resource."""

from catalog.blueprints.categories import bp as categories
from catalog.blueprints.health import bp as health
from catalog.blueprints.inventory import bp as inventory
from catalog.blueprints.products import bp as products

ALL = (products, categories, inventory, health)
