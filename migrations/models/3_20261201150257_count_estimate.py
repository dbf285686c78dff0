from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True

# The planner's estimate of a counted list's rows (is_active, and category_id unless NULL), as a function
# so that the statement that counts a list up to a cap can also estimate it when the cap is reached:
# a cold list page spends one statement on its total, whichever it turns out to be. Volatile (the default):
# PostgreSQL refuses EXPLAIN in a STABLE function.
UPGRADE = """
CREATE OR REPLACE FUNCTION products_estimate(active boolean, category integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    plan json;
BEGIN
    IF category IS NULL THEN
        EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM products WHERE is_active = %L', active) INTO plan;
    ELSE
        EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM products WHERE is_active = %L AND category_id = %L',
                       active, category) INTO plan;
    END IF;
    RETURN (plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint;
END
$$;
"""
DOWNGRADE = "DROP FUNCTION IF EXISTS products_estimate(boolean, integer);"


async def upgrade(db: BaseDBAsyncClient) -> str:
    return UPGRADE


async def downgrade(db: BaseDBAsyncClient) -> str:
    return DOWNGRADE


MODELS_STATE = (
    "eJztm19v4jgQwL8KylNXulu1XNld3RtQessthQrS3dWdTpFJXLCa2DRx2qJuv/vZTkLi/C"
    "tJKCUoL20Ze+zxL4MzM3afFYsY0HQ+9gGFC2KvlT9bzwoGFmR/JNp+aylgtQpbuICCuSk6"
    "614vBIUYzB1qA52ylltgOpCJDOjoNlpRRDCTYtc0uZDorCPCi1DkYnTvQo2SBaRLaLOGf/"
    "9jYoQN+MQG9z+u7rRbBE1DMhgZfG4h1+h6JWRDTC9FRz7bXNOJ6Vo47Lxa0yXBm94IUy5d"
    "QAxttiA+PLVdbj63zl9rsCLP0rCLZ2JEx4C3wDVpZLlzLZQpmjaeqNpsoGqaUgCQTjCHy0"
    "x1xOoX3ITf22fnn8+//PHp/AvrIszcSD6/eFOHYDxFgWesKi+iHVDg9RCMQ6jidwJrfwns"
    "dK5B/xhZZnKcbMAxD20gCNmG/rQPuBZ40kyIF3TJPp6dnuag/N6d9r92pyes1wc+JWFfAO"
    "+7Mfab2l4b5x3yjVqWwKzCpwz3jamVou276aHAzmGrDn6qfGTLce7NKNKTq+5PQdta+y2j"
    "yfivoHvkEfRHk16M/ArYEFOt0K4h6by+eRw+9F1sH3xDvr1L3T08XknAl8SGaIG/wbXgPG"
    "Q2AaynbRwpb6F6EX4JfCiQhiba4HHzGpNdiwFgy4ZUIGAWtMY3o5EiSM+BfvcIbEPLQK4v"
    "kWmwoZLQe77m5bcpNEHG1nG0vOXvvk0MV6dONUjX3ihHxIg7GGmTiGNJLpdsstpWXAIwWI"
    "gl8bn5TD6tIX5gDp4RZYaNuWEmkro1UWadXhN5Uea9CzBFdF0AbVSl1Ju4VLB5etCAQ6A2"
    "dKD9AIv4alSlARoHyvY/uCSuAzWT6CA9XM/OitK1jyFql1OkzjYZUic7Qeok8iMTOFRjrk"
    "mJfpfmzjdq/4LBUpEF09EnB4hhZ5sSpEz9Y/BH/R5CXuo0vBrM1O7VtZQ/XXTVAW9pS7lT"
    "ID35FHtAm0FaP4bq1xb/2PpnMh4ofGLgUqJh8qgBI7rwQByI0uKvgsmXpLSbLar2b9VE8p"
    "WdIySDu8QDST6NCYYqYT+2zNO2D4kP61FsnaVJPiilaf3urN+9GMSytEohc0AzJWCOgM4O"
    "l6NpzptGy89KuCIFORqbBz0IN2GgeF/4tGJ7sMNm2qx6E1A/aYGdvp5PN3AtRegz48UHsY"
    "9EZvMrz2tfqcLkm5FKWCFNu7KRXn7xG+3q6y9pSBxEQYskE3Qb8j1AA7Q0EH+I3SCpYk+c"
    "S2HDJEuCSnkpJoFydSDlzIijeMWeJptuzmzeJSFpb3Vm0845s2k3ZzYHdGYTvIlixwkmAZ"
    "lJA0qNV2+5Sg3dO4f4xeSmNxq0rqeD/nA2nIzl3E40chETIC9inQ66oxhg6dUQq4wTYkKA"
    "M7ZmKeyQUc+Z4m5IJzbpQLBf0L3JZCS5dm8Y992bq95genL2QQaeLCvJ4UjB0oasvIOyRo"
    "2c/TDrGu7KKP84ZeXmcb7/44zFzVuGqTGtN7omULeANeeWQAAs5cX+rvcEDrEAFXOuChcF"
    "bPiA4GPFI/CpGKS+e1HFI/BI4BQ9mU7nGZRSX6cqnYbXMiNI51qg9Ok7VkrlM3S57MJnxL"
    "f3V/eUa8MlCk2+1UGVZYv6UlNX2WddxXWgXSwUiGjs70j94AlH3kFsI2TTbQ80VGh4pqWT"
    "xLJSL1xmV6UiKk1FqnhFqkngjyrjO5iLCUed8GXeNiic71W4b1CPfK/whYNXrnzs7nJCF9"
    "pIXyopEbrfkhuhg7BPc423Tl/rvAD5AdpOwZuREZVjPH7sdLY5fux0so8feZsccvAvVQHC"
    "fvcjpPsm/5DHZqSpIfTfs8k4K4TeqMRjOKTT1q+WiZw6Zic5cDmM/Fg6HjZzOMShC1uMIg"
    "boVb2/WPVl9vI/mUyS4Q=="
)
