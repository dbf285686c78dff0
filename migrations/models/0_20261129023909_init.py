from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "categories" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(100) NOT NULL,
    "description" TEXT,
    "parent_id" INT REFERENCES "categories" ("id") ON DELETE SET NULL
);
CREATE TABLE IF NOT EXISTS "products" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(200) NOT NULL,
    "description" TEXT,
    "price" DOUBLE PRECISION NOT NULL,
    "is_active" BOOL NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "category_id" INT REFERENCES "categories" ("id") ON DELETE SET NULL
);
CREATE INDEX IF NOT EXISTS "idx_products_is_acti_561659" ON "products" ("is_active");
CREATE INDEX IF NOT EXISTS "idx_products_categor_1b2536" ON "products" ("category_id");
CREATE INDEX IF NOT EXISTS "ix_products_active_id" ON "products" ("is_active", "id");
CREATE INDEX IF NOT EXISTS "ix_products_category_active_id" ON "products" ("category_id", "is_active", "id");
CREATE TABLE IF NOT EXISTS "inventory" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "quantity" INT NOT NULL,
    "reserved" INT NOT NULL,
    "warehouse_location" VARCHAR(50),
    "last_restocked" TIMESTAMP,
    "product_id" INT NOT NULL UNIQUE REFERENCES "products" ("id") ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS "reviews" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "user_id" INT NOT NULL,
    "rating" INT NOT NULL,
    "comment" TEXT,
    "created_at" TIMESTAMP NOT NULL,
    "product_id" INT NOT NULL REFERENCES "products" ("id") ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS "idx_reviews_product_45920d" ON "reviews" ("product_id");
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        """


MODELS_STATE = (
    "eJztm21v4jgQgP8KyqeutLdqubK7um9A01tuKakgvVvd6RSZxIDVxKaOQ0G9/veznYS8p6"
    "TQLkH5UsjY45fHE3vGQ58Uh1jQdj/1AYNzQjfKb60nBQMH8i+Zso8tBSyXUYkQMDC1ZWXT"
    "r4WgFIOpyygwGS+ZAduFXGRB16RoyRDBXIo92xZCYvKKCM8jkYfRgwcNRuaQLSDlBf/8y8"
    "UIW3DNGw8el/fGDEHbSgwYWaJvKTfYZillA8yuZUXR29Qwie05OKq83LAFwdvaCDMhnUMM"
    "KZ+QaJ5RTwxfjC6Yazgjf6RRFX+IMR0LzoBns9h0p0YkUwxjpOnGRNUNQ6kAyCRYwOVDde"
    "Xs52IIv7QvLr9cfv318+VXXkUOcyv58ux3HYHxFSWeka48y3LAgF9DMo6gys8M1v4C0Hyu"
    "Yf0UWT7kNNmQYxnaUBCxjezpPeA6YG3YEM/Zgj9enJ+XoPyzO+5/647PeK0PokvCXwD/3R"
    "gFRW2/TPCO+MZHlsGsw3WB+abUXkU7MNNjgV3CVld/6KJlx3Uf7DjSs5vuD0nb2QQlQ230"
    "e1g9tgT9odZLkV8CCjEzKu0aCZ2XN4/jh36I7UNsyLP73N3D55UFfE0oRHP8HW4k5wEfE8"
    "Bm3saRcwrVi/BzaEOhNBoiBY/bYyxpWhwAnzZkEgEfQWt0NxwqkvQUmPePgFpGAXJzgWyL"
    "N5WF3gs0r7+PoQ0Kto6T5Z189ymxPJO5+0G69Vs5IUbCwEibxAwrYXLZIqftpCUAg7mcku"
    "hb9BTQGuAVN/ACLzMqLHUzUaJa42XW6Zgo8zIfPIAZYpsKaOMqrzqJX+Vsnh814AgohS6k"
    "K1jFVuMqDdA0UL7/wQXxXGjYxAT57npxVJSvfQpeezJE6uwSIXWKA6ROJj6ygcsMbpqMmP"
    "d55nyn9684LB05MB99toEUdr4pQcbVP4Vf6rcIZaHT4Ead6N2b20T8dNXVVVHSTsROofTs"
    "c2qBto20/hro31risfW3NlIV0THwGDEweTSAFZ94KA5Fef5XxeAroXSYLar2p2om+CqOEb"
    "LOXWZBsquhYagT/mfHOG13l/i4lmLnKC1hg4kwrd+d9LtXaipK28tlDmnmOMwx0MXucjzM"
    "eVNv+UmJZqQg1+D9oJU0Ew5K1IXrJd+DXd7TdtZbh3pthOMM9AK6oWkpUp8PXj7IfSTWW3"
    "DzvAmU9uh829Iuo2jig+YW+qe4WO2dbqHbJbfQ7eYW+ohuoSkyc0z72iag0A1CuSfwTKjU"
    "0LxLiF9pd72h2rodq/3BZKCNkt6qLBQiLkD+GTxWu8MU4MSBkLrrI8SGABdszXG9FOopVz"
    "wM6cwmHQreF3RP04YJ0+4N0rZ7d9NTx2cXH5LAs4GySaEgYoAcZ/LFYC2pfIBArUbGfpyR"
    "mre0Xr+cSeVmOX/+cqa85R3d1JTWGyU+6+awluQ9Q2DHlvk8xpA6ZVx7pD4pXCH4uGdSby"
    "wbqe9etGdSL+Y4xXNt+TzDy6GXqSbye7WMCPK5VrjMCQwr5y4nMrniq5yYbTd5z1odEx9L"
    "7jU8F9JqR3FM4/2SdEdPOHYG8I2Id7c70Eih4ZkXzhHHyf0JV/GtUEyluRGqfiPUBNAnFX"
    "EdTarzpAOuwvxl5XhrjwxmPeKtyinMF5LIh0t3diFF5kLJ8ZCDklIPGUR1Gge5Tq91mYO8"
    "gtSt+FurmMoppv86nV3Sf51OcfpPlCVdDvFSVSAcVD9Bum/yLz68R5brQv8x0UZFLvRWJe"
    "3DIZO1/mvZyK1jdFICV8Ao96XTbrOAQ1w2p7IV2UBv319E7XuYPf8PQFdkBg=="
)
