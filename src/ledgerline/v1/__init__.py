"""Generated from api/proto/ledgerline/v1 by `make proto`: do not edit."""
