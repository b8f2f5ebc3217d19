"""What tests share, so no test module imports another.

- `live`: the real app on uvicorn in a thread of the test process (`LiveServer`, `ADMIN_TOKEN`).
- `serving`: `ordercancel serve` as a real subprocess (`ServeProcess`), and `free_port`.
- `postgres`: the PostgreSQL test server and its throwaway schemas.
- `orders`: `OrderFactory`, the shape of the `make_order` fixture.
- `wire`: the endpoints, the documented messages, request bodies and responses in either format.
- `rawhttp`: HTTP/1.1 over a bare socket, for requests no client library would send.
"""
