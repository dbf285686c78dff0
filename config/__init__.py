"""Service configuration: settings from the environment and the Tortoise/aerich config."""
