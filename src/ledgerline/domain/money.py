"""Money: an integer amount in the currency's minor unit and an ISO 4217
code. Never a float."""

from __future__ import annotations

from dataclasses import dataclass

from ledgerline.domain.errors import InvalidArgumentError

MAX_AMOUNT = 10**12

# Active ISO 4217 codes (funds and precious metals left out).
ISO_4217 = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG
    """.split()  # noqa: SIM905 - a readable table
)


def parse_currency(raw: str) -> str:
    if raw not in ISO_4217:
        raise InvalidArgumentError.for_field(
            "currency", "must be an ISO 4217 currency code in upper case, like EUR"
        )
    return raw


def parse_amount(raw: int) -> int:
    # bool is an int in Python; a JSON true is not an amount.
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_AMOUNT:
        raise InvalidArgumentError.for_field(
            "amount", f"must be an integer from 1 to {MAX_AMOUNT} (minor units)"
        )
    return raw


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    @classmethod
    def parse(cls, amount: int, currency: str) -> Money:
        from ledgerline.domain.validation import collect_violations

        parsed_amount, parsed_currency = collect_violations(
            lambda: parse_amount(amount), lambda: parse_currency(currency)
        )
        return cls(parsed_amount, parsed_currency)
