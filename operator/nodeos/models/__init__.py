"""The API of nodeos: pydantic models of UpgradePlan and NodeOSConfig, the source of the CRDs."""
