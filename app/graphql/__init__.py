"""The GraphQL face at /graphql: schema, per-request context and loaders, access, router."""
