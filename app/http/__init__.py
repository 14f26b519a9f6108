"""The transport both faces stand on: app state, the caller, request ids, problems, limits,
middleware and the pure-ASGI fast-path base. It imports no face (app.api, app.graphql)."""
