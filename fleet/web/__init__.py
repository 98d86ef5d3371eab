"""The fleet's HTTP side: the JSON API (api), its OpenAPI spec (openapi), and uvicorn on
the serve loop (http)."""
