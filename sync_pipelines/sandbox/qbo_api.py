"""QuickBooks Online Accounting API v3 and Intuit OAuth 2.0 (api-contracts §1)."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import time
from decimal import Decimal
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode

from sync_pipelines import money

from . import credentials, qbo_query
from .http import PACIFIC, Req, Resp, qbo_time
from .state import NAME_LIST, QBO_ENTITY, SandboxState

CURRENCY_NAMES = {
    "USD": "United States Dollar", "EUR": "Euro", "GBP": "British Pound Sterling", "CAD": "Canadian Dollar",
    "AUD": "Australian Dollar", "JPY": "Japanese Yen", "CHF": "Swiss Franc", "NZD": "New Zealand Dollar",
    "SEK": "Swedish Krona", "DKK": "Danish Krone", "NOK": "Norwegian Krone", "MXN": "Mexican Peso",
    "INR": "Indian Rupee", "BHD": "Bahraini Dinar",
}
PATH_ENTITY = {"customer": "customers", "item": "items", "class": "classes", "term": "terms", "invoice": "invoices",
               "payment": "payments"}
META = ("MetaData.CreateTime", "MetaData.LastUpdatedTime", "Id")
QUERYABLE = {
    "Customer": {*META, "DisplayName", "GivenName", "MiddleName", "FamilyName", "CompanyName", "FullyQualifiedName",
                 "PrimaryEmailAddr", "PrimaryPhone", "Active", "Balance", "Job", "ParentRef", "Title", "Suffix",
                 "PrintOnCheckName", "CurrencyRef"},
    "Item": {*META, "Name", "Sku", "Type", "Active", "FullyQualifiedName", "ParentRef", "UnitPrice"},
    "Class": {*META, "Name", "Active", "FullyQualifiedName", "SubClass", "ParentRef"},
    "Term": {*META, "Name", "Active", "Type", "DueDays"},
    "Invoice": {*META, "DocNumber", "TxnDate", "DueDate", "CustomerRef", "TotalAmt", "Balance", "DepartmentRef",
                "EmailStatus", "PrintStatus"},
    "Payment": {*META, "TxnDate", "CustomerRef", "TotalAmt"},
    "Preferences": {*META},
    "CompanyInfo": {*META},
    "TaxCode": {*META, "Name", "Active", "Taxable", "TaxGroup"},
    "TaxRate": {*META, "Name", "Active", "RateValue", "AgencyRef", "TaxReturnLineRef"},
}
ENTITY_COLL = {v: k for k, v in QBO_ENTITY.items()}

INVOICE_FIELDS = {
    "Id", "SyncToken", "sparse", "domain", "MetaData", "CustomerRef", "Line", "TxnDate", "DueDate", "DocNumber",
    "CustomerMemo", "PrivateNote", "SalesTermRef", "ClassRef", "DepartmentRef", "CurrencyRef", "ExchangeRate",
    "BillEmail", "BillEmailCc", "BillEmailBcc", "EmailStatus", "PrintStatus", "ApplyTaxAfterDiscount", "TxnTaxDetail",
    "AllowOnlineCreditCardPayment", "AllowOnlineACHPayment", "AllowIPNPayment", "AllowOnlinePayment", "LinkedTxn",
    "CustomField", "BillAddr", "ShipAddr", "ShipFromAddr", "ShipDate", "TrackingNum", "ShipMethodRef",
    "GlobalTaxCalculation", "ProjectRef", "TransactionLocationType", "Deposit", "DepositToAccountRef", "TotalAmt",
    "Balance", "HomeBalance", "HomeTotalAmt", "TxnSource", "InvoiceLink", "DeliveryInfo", "TxnStatus",
}
LINE_FIELDS = {"Id", "LineNum", "Description", "Amount", "DetailType", "SalesItemLineDetail", "DiscountLineDetail",
               "SubTotalLineDetail", "DescriptionLineDetail", "GroupLineDetail", "LinkedTxn", "ProjectRef"}
SALES_DETAIL_FIELDS = {"ItemRef", "Qty", "UnitPrice", "ServiceDate", "ClassRef", "TaxCodeRef", "ItemAccountRef",
                       "DiscountRate", "DiscountAmt", "MarkupInfo", "TaxInclusiveAmt", "PriceLevelRef", "TaxClassificationRef"}
DISCOUNT_DETAIL_FIELDS = {"PercentBased", "DiscountPercent", "DiscountAccountRef", "ClassRef", "TaxCodeRef"}
CUSTOMER_FIELDS = {
    "Id", "SyncToken", "sparse", "domain", "MetaData", "DisplayName", "Title", "GivenName", "MiddleName", "FamilyName",
    "Suffix", "CompanyName", "FullyQualifiedName", "PrimaryEmailAddr", "PrimaryPhone", "Mobile", "Fax",
    "AlternatePhone", "WebAddr", "BillAddr", "ShipAddr", "CurrencyRef", "SalesTermRef", "Notes", "Active",
    "PrintOnCheckName", "Taxable", "PreferredDeliveryMethod", "ParentRef", "Job", "BillWithParent", "Balance",
    "BalanceWithJobs", "OpenBalanceDate", "ResaleNum", "PaymentMethodRef", "DefaultTaxCodeRef", "IsProject",
    "TaxExemptionReasonId", "PrimaryTaxIdentifier", "GSTIN", "BusinessNumber", "CustomerTypeRef",
}


class Fault(Exception):
    def __init__(self, code: str, message: str, detail: str, element: str = "", status: int = 400, ftype: str = "ValidationFault"):
        super().__init__(detail)
        self.code, self.message, self.detail, self.element, self.status, self.ftype = code, message, detail, element, status, ftype

    def resp(self) -> Resp:
        return fault_resp(self.status, [(self.message, self.detail, self.code, self.element)], self.ftype)


def fault_resp(status: int, errors: list[tuple[str, str, str, str]], ftype: str = "ValidationFault") -> Resp:
    return Resp(status, {"Fault": {"Error": [{"Message": m, "Detail": d, "code": c, "element": e} for m, d, c, e in errors],
                                   "type": ftype}, "time": qbo_time()})


def unauthorized(detail: str) -> Resp:
    body = {"warnings": None, "intuitObject": None,
            "fault": {"error": [{"message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                                 "detail": detail, "code": "3200", "element": None}], "type": "AUTHENTICATION"},
            "report": None, "queryResponse": None, "batchItemResponse": [], "attachableResponse": [],
            "syncErrorResponse": None, "requestId": None, "time": int(time.time() * 1000), "status": None, "cdcresponse": []}
    return Resp(401, body, headers={"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'})


def check_auth(st: SandboxState, req: Req) -> Resp | None:
    auth = req.headers.get("authorization", "")
    if auth[:7].lower() != "bearer ":
        return unauthorized("Token invalid: no Bearer access token in the Authorization header")
    token = auth[7:].strip()
    exp = st.access_tokens.get(token)
    if exp is None:
        return unauthorized("Token invalid: the access token is not recognised")
    if exp <= time.time():
        return unauthorized(f"Token expired: {token[:6]}...")
    return None


def token_realm(st: SandboxState, req: Req) -> str | None:
    """The realm the request's (already checked) access token was minted for."""
    token = req.headers.get("authorization", "")[7:].strip()
    return st.access_token_realms.get(token, st.realm_id) if token in st.access_tokens else None


def envelope(entity: str, obj: Any) -> dict:
    return {entity: obj, "time": qbo_time()}


def meta_now() -> str:
    return dt.datetime.now(PACIFIC).replace(microsecond=0).isoformat()


def _loads(req: Req) -> Any:
    try:
        return money.loads(req.body or b"")
    except ValueError as exc:
        raise Fault("2010", "Request has invalid or unsupported property", f"Unable to parse the request body as JSON: {exc}") from exc


def _unknown(obj: dict, allowed: set[str], where: str) -> None:
    for k in obj:
        if k not in allowed:
            raise Fault("2010", "Request has invalid or unsupported property",
                        f'Property Name:Unrecognized field "{k}" ({where}) specified is unsupported or invalid', element=k)


def _required(name: str) -> Fault:
    return Fault("2020", "Required param missing, need to supply the required value for the API",
                 f"Required parameter {name} is missing in the request", element=name)


def _ref_value(ref: Any, name: str) -> str:
    if not isinstance(ref, dict) or not isinstance(ref.get("value"), (str, int)) or isinstance(ref.get("value"), bool):
        raise _required(f"{name}.value")
    return str(ref["value"])


def _resolve(st: SandboxState, coll: str, ref: Any, name: str) -> dict:
    rid = _ref_value(ref, name)
    rec = st.qbo[coll].get(rid)
    if rec is None:
        raise Fault("2500", "Invalid Reference Id",
                    f"Invalid Reference Id : {QBO_ENTITY[coll]} with Id {rid} does not exist ({name})", element=name)
    if rec.get("Active") is False:
        raise Fault("610", "Object Not Found",
                    f"Object Not Found : Something you're trying to use has been made inactive. Check the fields with "
                    f"accounts, customers, items, vendors or employees. ({name} {rid})", element=name)
    return rec


def _dec(v: Any, name: str) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
        if isinstance(v, str):
            try:
                return Decimal(v)
            except Exception:  # noqa: BLE001
                pass
        raise Fault("2010", "Request has invalid or unsupported property", f"{name}: {v!r} is not a number", element=name)
    return Decimal(v)


# Intuit documents amounts as "max 15 digits in 10.5 format": 10 digits before the point.
MAX_AMOUNT_INTEGER_DIGITS = 10


def _amount(v: Any, name: str) -> Decimal:
    d = _dec(v, name)
    if d.is_finite() and abs(d) >= Decimal(10) ** MAX_AMOUNT_INTEGER_DIGITS:
        raise Fault("2010", "Request has invalid or unsupported property",
                    f"{name}: {d} exceeds max 15 digits in 10.5 format", element="Line.Amount")
    return d


def _date(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise Fault("2010", "Request has invalid or unsupported property", f"{name}: {v!r} is not a date", element=name)
    try:
        return dt.date.fromisoformat(v[:10]).isoformat()
    except ValueError as exc:
        raise Fault("2010", "Request has invalid or unsupported property", f"{name}: {v!r} is not a date (yyyy-mm-dd)", element=name) from exc


def _currency_ref(code: str) -> dict:
    return {"value": code, "name": CURRENCY_NAMES.get(code, code)}


# ---------------------------------------------------------------------------- invoices
def build_invoice(st: SandboxState, body: Any, existing: dict | None = None) -> dict:
    """Validate an invoice create/update body and return the stored entity (raises Fault)."""
    if not isinstance(body, dict):
        raise Fault("2010", "Request has invalid or unsupported property", "Invoice body must be a JSON object")
    _unknown(body, INVOICE_FIELDS, "Invoice")
    if "CustomerRef" not in body:
        raise _required("CustomerRef")
    customer = _resolve(st, "customers", body["CustomerRef"], "CustomerRef")
    lines_in = body.get("Line")
    if not isinstance(lines_in, list) or not lines_in:
        raise _required("Line")

    # currency
    cust_cur = (customer.get("CurrencyRef") or {}).get("value") or st.home_currency
    if st.multicurrency:
        if "CurrencyRef" not in body:
            raise _required("CurrencyRef")
        currency = _ref_value(body["CurrencyRef"], "CurrencyRef")
        if currency != cust_cur:
            raise Fault("6000", "A business validation error has occurred while processing your request",
                        f"Business Validation Error: The transaction currency ({currency}) must match the customer's "
                        f"currency ({cust_cur}).", element="CurrencyRef")
    else:
        currency = st.home_currency
        if "CurrencyRef" in body and _ref_value(body["CurrencyRef"], "CurrencyRef") != currency:
            raise Fault("6000", "A business validation error has occurred while processing your request",
                        "Business Validation Error: Multicurrency is not enabled for this company; "
                        f"CurrencyRef must be the home currency {currency}.", element="CurrencyRef")
    try:
        q = money.quantum(currency)
    except money.UnknownCurrencyError as exc:
        raise Fault("2500", "Invalid Reference Id", f"Invalid Reference Id : currency {currency}", element="CurrencyRef") from exc

    class_line = bool(st.pref("AccountingInfoPrefs", "ClassTrackingPerTxnLine", False))
    class_txn = bool(st.pref("AccountingInfoPrefs", "ClassTrackingPerTxn", False))

    def check_class(ref: Any, name: str, allowed: bool) -> dict:
        if not allowed:
            raise Fault("6000", "A business validation error has occurred while processing your request",
                        f"Business Validation Error: class tracking is not enabled for {name}", element=name)
        c = _resolve(st, "classes", ref, name)
        return {"value": c["Id"], "name": c.get("FullyQualifiedName") or c["Name"]}

    # Tax (api-contracts "Company settings, tax"): a US company marks lines TAX or NON; every
    # other country needs a TaxCode on each line and the invoice's GlobalTaxCalculation.
    us = st.is_us
    calculation = body.get("GlobalTaxCalculation")
    if calculation is not None and calculation not in TAX_CALCULATIONS:
        raise Fault("2170", "Invalid Enumeration", f"GlobalTaxCalculation: invalid value {calculation!r}",
                    element="GlobalTaxCalculation")
    if not us and calculation is None:
        raise _required("GlobalTaxCalculation")
    tax_base: dict[str, Decimal] = {}

    def line_tax_code(ref: Any, where: str) -> str:
        if us:
            code = _ref_value(ref, "TaxCodeRef") if ref is not None else "NON"
            if code not in ("TAX", "NON"):
                raise Fault("2500", "Invalid Reference Id", f"Invalid Reference Id : TaxCodeRef {code}", element="TaxCodeRef")
            return code
        if ref is None:
            raise Fault("6000", "A business validation error has occurred while processing your request",
                        f"Business Validation Error: Make sure all your transactions have a {_tax_word(st)} rate "
                        f"before you save. ({where} has no TaxCodeRef)", element="TaxCodeRef")
        code = _ref_value(ref, "TaxCodeRef")
        rec = st.qbo["tax_codes"].get(code)
        if rec is None or rec.get("Active") is False:
            raise Fault("2500", "Invalid Reference Id",
                        f"Invalid Reference Id : TaxCode with Id {code} does not exist or is inactive", element="TaxCodeRef")
        return code

    out_lines: list[dict] = []
    sales_sum = Decimal(0)
    discount_line: dict | None = None
    n = 0
    for idx, line in enumerate(lines_in):
        where = f"Line[{idx}]"
        if not isinstance(line, dict):
            raise Fault("2010", "Request has invalid or unsupported property", f"{where} must be an object")
        _unknown(line, LINE_FIELDS, where)
        dtype = line.get("DetailType")
        desc = line.get("Description")
        if desc is not None and (not isinstance(desc, str) or len(desc) > 4000):
            raise Fault("2050", "String length is either shorter or longer than supported by specification",
                        f"{where}.Description: max 4000 characters", element="Line.Description")
        if dtype == "SubTotalLineDetail":
            continue  # recomputed
        if dtype == "SalesItemLineDetail":
            det = line.get("SalesItemLineDetail")
            if not isinstance(det, dict):
                raise _required(f"{where}.SalesItemLineDetail")
            _unknown(det, SALES_DETAIL_FIELDS, f"{where}.SalesItemLineDetail")
            if "Amount" not in line:
                raise _required("Line.Amount")
            amount = _amount(line["Amount"], f"{where}.Amount")
            if "ItemRef" not in det:
                raise _required(f"{where}.SalesItemLineDetail.ItemRef")
            item = _resolve(st, "items", det["ItemRef"], "ItemRef")
            new_det: dict[str, Any] = {"ItemRef": {"value": item["Id"], "name": item["Name"]}}
            qty = _dec(det["Qty"], f"{where}.Qty") if "Qty" in det else None
            price = _dec(det["UnitPrice"], f"{where}.UnitPrice") if "UnitPrice" in det else None
            if qty is not None and price is not None:
                expected = money.quantize(qty * price, currency)
                if amount != expected:
                    raise Fault("6070", "Amount is not equal to UnitPrice * Qty",
                                f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount} (expected {expected} = "
                                f"{qty} x {price})", element="Line.Amount")
            if amount != amount.quantize(q):
                raise Fault("6000", "A business validation error has occurred while processing your request",
                            f"Business Validation Error: {where}.Amount {amount} has more decimal places than {currency} allows",
                            element="Line.Amount")
            if qty is not None:
                new_det["Qty"] = qty
            if price is not None:
                new_det["UnitPrice"] = price
            elif qty:
                new_det["UnitPrice"] = amount / qty
            if "ServiceDate" in det:
                new_det["ServiceDate"] = _date(det["ServiceDate"], f"{where}.ServiceDate")
            if "ClassRef" in det:
                new_det["ClassRef"] = check_class(det["ClassRef"], "Line.ClassRef", class_line)
            code_id = line_tax_code(det.get("TaxCodeRef"), where)
            new_det["TaxCodeRef"] = {"value": code_id}
            tax_base[code_id] = tax_base.get(code_id, Decimal(0)) + amount
            for k in ("ItemAccountRef", "DiscountRate", "DiscountAmt", "MarkupInfo"):
                if k in det:
                    new_det[k] = det[k]
            n += 1
            out = {"Id": str(n), "LineNum": n, "Amount": amount.quantize(q), "DetailType": dtype, "SalesItemLineDetail": new_det}
            if desc is not None:
                out["Description"] = desc
            out_lines.append(out)
            sales_sum += amount
        elif dtype == "DescriptionOnly":
            n += 1
            out = {"Id": str(n), "LineNum": n, "DetailType": dtype, "DescriptionLineDetail": line.get("DescriptionLineDetail") or {}}
            if desc is not None:
                out["Description"] = desc
            out_lines.append(out)
        elif dtype == "DiscountLineDetail":
            if discount_line is not None:
                raise Fault("6000", "A business validation error has occurred while processing your request",
                            "Business Validation Error: only one discount line is allowed", element="Line")
            det = line.get("DiscountLineDetail")
            if not isinstance(det, dict):
                raise _required(f"{where}.DiscountLineDetail")
            _unknown(det, DISCOUNT_DETAIL_FIELDS, f"{where}.DiscountLineDetail")
            discount_line = {"line": line, "det": det}
        elif dtype == "GroupLineDetail":
            raise Fault("6000", "A business validation error has occurred while processing your request",
                        "Business Validation Error: GroupLineDetail is not supported by this sandbox", element="Line")
        else:
            raise Fault("2170", "Invalid Enumeration", f"{where}.DetailType: invalid value {dtype!r}", element="Line.DetailType")
    if not out_lines:
        raise _required("Line")

    discount = Decimal(0)
    disc_out: dict | None = None
    disc_code: str | None = None
    if discount_line is not None and not st.pref("SalesFormsPrefs", "AllowDiscount", True):
        # What QuickBooks does (api-contracts: "API seems to be completely ignoring it"): the
        # discount line is dropped without an error, so the invoice totals more than was sent.
        discount_line = None
    if discount_line is not None:
        det = discount_line["det"]
        new_det = {"PercentBased": bool(det.get("PercentBased", False))}
        if new_det["PercentBased"]:
            if "DiscountPercent" not in det:
                raise _required("DiscountLineDetail.DiscountPercent")
            pct = _dec(det["DiscountPercent"], "DiscountPercent")
            discount = money.quantize(sales_sum * pct / 100, currency)
            new_det["DiscountPercent"] = pct
        else:
            if "Amount" not in discount_line["line"]:
                raise _required("Line.Amount")
            discount = _amount(discount_line["line"]["Amount"], "Line.Amount")
            if discount != discount.quantize(q):
                raise Fault("6000", "A business validation error has occurred while processing your request",
                            f"Business Validation Error: discount {discount} has more decimal places than {currency} allows")
        if "DiscountAccountRef" in det:
            new_det["DiscountAccountRef"] = det["DiscountAccountRef"]
        if "ClassRef" in det:
            new_det["ClassRef"] = check_class(det["ClassRef"], "Line.ClassRef", class_line)
        if "TaxCodeRef" in det:
            disc_code = line_tax_code(det["TaxCodeRef"], "DiscountLineDetail")
            new_det["TaxCodeRef"] = {"value": disc_code}
        n += 1
        disc_out = {"Id": str(n), "LineNum": n, "Amount": discount.quantize(q), "DetailType": "DiscountLineDetail",
                    "DiscountLineDetail": new_det}
        if discount_line["line"].get("Description") is not None:
            disc_out["Description"] = discount_line["line"]["Description"]
    net = (sales_sum - discount).quantize(q)
    tax_detail = _tax(st, tax_base, discount, disc_code, calculation, currency, us)
    total_tax = tax_detail["TotalTax"]
    total = net if calculation == "TaxInclusive" else (net + total_tax).quantize(q)
    for name, value in (("subtotal", sales_sum), ("TotalAmt", total)):
        if abs(value) >= Decimal(10) ** MAX_AMOUNT_INTEGER_DIGITS:
            raise Fault("2010", "Request has invalid or unsupported property",
                        f"{name} {value} exceeds max 15 digits in 10.5 format", element="TotalAmt")
    if net < 0:
        raise Fault("6000", "A business validation error has occurred while processing your request",
                    "Business Validation Error: Transaction total cannot be negative", element="TotalAmt")
    lines = out_lines + [{"Amount": sales_sum.quantize(q), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}}]
    if disc_out is not None:
        lines.append(disc_out)

    today = dt.datetime.now(PACIFIC).date()
    txn_date = _date(body["TxnDate"], "TxnDate") if "TxnDate" in body else (existing or {}).get("TxnDate", today.isoformat())
    term = None
    if "SalesTermRef" in body:
        term = _resolve(st, "terms", body["SalesTermRef"], "SalesTermRef")
    elif customer.get("SalesTermRef"):
        term = st.qbo["terms"].get(str(customer["SalesTermRef"].get("value")))
    elif st.pref("SalesFormsPrefs", "DefaultTerms"):
        term = st.qbo["terms"].get(str(st.pref("SalesFormsPrefs", "DefaultTerms").get("value")))
    if "DueDate" in body:
        due = _date(body["DueDate"], "DueDate")
    else:
        days = 30
        if term is not None and isinstance(term.get("DueDays"), int):
            days = term["DueDays"]
        due = (dt.date.fromisoformat(txn_date) + dt.timedelta(days=days)).isoformat()

    doc = body.get("DocNumber")
    if doc is not None:
        if not isinstance(doc, str) or len(doc) > 21:
            raise Fault("2050", "String length is either shorter or longer than supported by specification",
                        f"DocNumber: max 21 characters, got {len(str(doc))}", element="DocNumber")
    elif existing is not None:
        doc = existing.get("DocNumber")
    elif not st.pref("SalesFormsPrefs", "CustomTxnNumbers", False):
        # Intuit: with CustomTxnNumber false "DocNumber is system generated by incrementing the
        # last number by 1"; with it true and no value sent, "the resulting DocNumber is null".
        doc = _next_doc_number(st)
    other = st.invoices_by_doc.get(doc) if doc is not None else None
    if other is not None and (existing is None or other != existing["Id"]) and not st.pref("SalesFormsPrefs", "AllowDuplicateDocNum", False):
        raise Fault("6140", "Duplicate Document Number Error",
                    f"Duplicate Document Number Error : You must specify a different number. This number has already "
                    f"been used. DocNumber={doc} is assigned to TxnType=Invoice with TxnId={other}", element="DocNumber")
    pn = body.get("PrivateNote")
    if pn is not None and (not isinstance(pn, str) or len(pn) > 4000):
        raise Fault("2050", "String length is either shorter or longer than supported by specification",
                    "PrivateNote: max 4000 characters", element="PrivateNote")
    cf = body.get("CustomField")
    if cf is not None:
        if not isinstance(cf, list) or len(cf) > 3:
            raise Fault("2010", "Request has invalid or unsupported property", "CustomField: at most 3 string custom fields", element="CustomField")
        for f in cf:
            if isinstance(f, dict) and isinstance(f.get("StringValue"), str) and len(f["StringValue"]) > 31:
                raise Fault("2050", "String length is either shorter or longer than supported by specification",
                            "CustomField.StringValue: max 31 characters", element="CustomField")

    now = meta_now()
    inv: dict[str, Any] = {
        "AllowIPNPayment": False, "AllowOnlinePayment": False, "AllowOnlineCreditCardPayment": False,
        "AllowOnlineACHPayment": False, "domain": "QBO", "sparse": False,
        "Id": existing["Id"] if existing else "",
        "SyncToken": str(int(existing["SyncToken"]) + 1) if existing else "0",
        "MetaData": {"CreateTime": (existing or {}).get("MetaData", {}).get("CreateTime", now), "LastUpdatedTime": now},
        "CustomField": cf or [],
        "TxnDate": txn_date,
        "CurrencyRef": _currency_ref(currency),
        "LinkedTxn": body.get("LinkedTxn") or [],
        "Line": lines,
        "TxnTaxDetail": tax_detail,
        "CustomerRef": {"value": customer["Id"], "name": customer["DisplayName"]},
        "DueDate": due,
        "TotalAmt": total, "Balance": total,
        "ApplyTaxAfterDiscount": bool(body.get("ApplyTaxAfterDiscount", False)),
        "PrintStatus": body.get("PrintStatus", "NotSet"), "EmailStatus": body.get("EmailStatus", "NotSet"),
    }
    if doc is not None:
        inv["DocNumber"] = doc
    if calculation is not None:
        inv["GlobalTaxCalculation"] = calculation
    if st.multicurrency:
        rate = _dec(body.get("ExchangeRate", 1), "ExchangeRate")
        inv["ExchangeRate"] = rate
        inv["HomeTotalAmt"] = money.quantize(total * rate, st.home_currency)
        inv["HomeBalance"] = inv["HomeTotalAmt"]
    if term is not None:
        inv["SalesTermRef"] = {"value": term["Id"], "name": term["Name"]}
    if "ClassRef" in body:
        inv["ClassRef"] = check_class(body["ClassRef"], "ClassRef", class_txn)
    for k in ("CustomerMemo", "PrivateNote", "BillEmail", "BillEmailCc", "BillEmailBcc", "DepartmentRef", "ProjectRef", "ShipDate"):
        if k in body:
            inv[k] = body[k]
    if inv["EmailStatus"] == "NeedToSend" and not (body.get("BillEmail") or {}).get("Address"):
        raise _required("BillEmail")
    for k in ("BillAddr", "ShipAddr"):
        if k in body:
            inv[k] = body[k]
        elif customer.get(k):
            inv[k] = customer[k]
    return inv


TAX_CALCULATIONS = ("TaxExcluded", "TaxInclusive", "NotApplicable")
#: The rate the sandbox's Automated Sales Tax charges a US company's TAX lines when the fixture
#: has no "TAX" tax code with rates of its own (real AST picks it from the ship-to address).
AST_DEFAULT_PERCENT = Decimal("8.875")


def _tax_word(st: SandboxState) -> str:
    country = str(st.company_info.get("Country") or "").upper()
    return {"GB": "VAT", "UK": "VAT", "IE": "VAT", "CA": "GST/HST", "AU": "GST", "NZ": "GST", "IN": "GST"}.get(country, "tax")


def _code_rates(st: SandboxState, code: str, us: bool) -> list[tuple[str, Decimal]]:
    """(TaxRate Id, percent) for each sales rate of a tax code."""
    rec = st.qbo["tax_codes"].get(code)
    if rec is not None:
        out = []
        for d in (rec.get("SalesTaxRateList") or {}).get("TaxRateDetail") or []:
            rid = str((d.get("TaxRateRef") or {}).get("value"))
            rate = st.qbo["tax_rates"].get(rid) or {}
            out.append((rid, Decimal(rate.get("RateValue", 0))))
        if out or not us:
            return out
    if us and code == "TAX":
        return [("AST", AST_DEFAULT_PERCENT)]
    return []


def _tax(st: SandboxState, base: dict[str, Decimal], discount: Decimal, disc_code: str | None,
         calculation: str | None, currency: str, us: bool) -> dict:
    """TxnTaxDetail for the lines: per tax rate, half-up on the net amount of its code's lines.

    A discount line lowers the base of its own TaxCodeRef, or (none given) of the codes in
    proportion to their amounts. US: only with Automated Sales Tax (TaxPrefs.PartnerTaxEnabled)
    are TAX lines taxed, as QuickBooks' AST engine would (one rate for the whole invoice).
    """
    q = money.quantum(currency)
    zero = Decimal(0).quantize(q)
    if calculation == "NotApplicable" or (us and not st.pref("TaxPrefs", "PartnerTaxEnabled", False)):
        return {"TotalTax": zero}
    net = dict(base)
    if discount:
        if disc_code is not None:
            net[disc_code] = net.get(disc_code, Decimal(0)) - discount
        else:
            gross = sum(base.values(), Decimal(0))
            left = discount
            codes = sorted(base)
            for i, code in enumerate(codes):
                share = left if i == len(codes) - 1 else money.quantize(discount * base[code] / gross, currency) if gross else Decimal(0)
                net[code] -= share
                left -= share
    lines, total = [], Decimal(0)
    for code in sorted(net):
        rates = _code_rates(st, code, us)
        combined = sum((r for _, r in rates), Decimal(0))
        for rid, pct in rates:
            share = net[code] * pct / (100 + combined) if calculation == "TaxInclusive" else net[code] * pct / 100
            amount = money.quantize(share, currency)
            total += amount
            lines.append({"Amount": amount, "DetailType": "TaxLineDetail",
                          "TaxLineDetail": {"TaxRateRef": {"value": rid}, "PercentBased": True, "TaxPercent": pct,
                                            "NetAmountTaxable": money.quantize(net[code], currency)}})
    out: dict = {"TotalTax": total.quantize(q)}
    if lines:
        out["TaxLine"] = lines
    return out


def _next_doc_number(st: SandboxState) -> str:
    best = 1000
    for d in st.invoices_by_doc:
        if d.isdigit():
            best = max(best, int(d))
    return str(best + 1)


def _stale(entity: str) -> Fault:
    return Fault("5010", "Stale Object Error",
                 f"Stale Object Error : You and sandbox were working on this at the same time. sandbox finished before "
                 f"you did, so your work was not saved. ({entity})", element="SyncToken")


def _not_found(entity: str, rid: str) -> Fault:
    return Fault("610", "Object Not Found",
                 f"Object Not Found : Something you're trying to use has been made inactive. Check the fields with "
                 f"accounts, customers, items, vendors or employees. ({entity} {rid})")


def _existing_for_update(st: SandboxState, coll: str, body: dict) -> dict:
    rid = str(body.get("Id"))
    rec = st.qbo[coll].get(rid)
    if rec is None:
        raise _not_found(QBO_ENTITY[coll], rid)
    if "SyncToken" not in body:
        raise _required("SyncToken")
    if str(body["SyncToken"]) != rec["SyncToken"]:
        raise _stale(QBO_ENTITY[coll])
    return rec


def post_invoice(st: SandboxState, req: Req, realm: str) -> Resp:
    op = req.q("operation")
    body = _loads(req)
    if op in ("void", "delete"):
        if not isinstance(body, dict) or "Id" not in body:
            raise _required("Id")
        rec = _existing_for_update(st, "invoices", body)
        if op == "delete":
            del st.qbo["invoices"][rec["Id"]]
            if st.invoices_by_doc.get(rec.get("DocNumber")) == rec["Id"]:
                del st.invoices_by_doc[rec["DocNumber"]]
            st.qbo_deleted.append({"entity": "Invoice", "Id": rec["Id"], "LastUpdatedTime": meta_now()})
            st.qbo_event("Invoice", rec["Id"], "Delete")
            st.touch("quickbooks")
            return Resp(200, envelope("Invoice", {"status": "Deleted", "domain": "QBO", "Id": rec["Id"]}), mutated=True)
        void_invoice(st, rec)
        return Resp(200, envelope("Invoice", rec), mutated=True)
    if op not in (None, "update", "create"):
        raise Fault("500", "Unsupported Operation", f"Operation {op} is not supported for Invoice")
    if isinstance(body, dict) and body.get("Id") is not None:
        rec = _existing_for_update(st, "invoices", body)
        merged = body
        if body.get("sparse") is True:
            merged = {k: v for k, v in rec.items() if k in INVOICE_FIELDS}
            merged.update(body)
        for k in ("TotalAmt", "Balance", "HomeBalance", "HomeTotalAmt", "MetaData", "domain", "sparse", "Id", "SyncToken"):
            merged.pop(k, None)
        inv = build_invoice(st, merged, existing=rec)
        if st.invoices_by_doc.get(rec.get("DocNumber")) == rec["Id"]:
            del st.invoices_by_doc[rec["DocNumber"]]
        st.qbo["invoices"][rec["Id"]] = inv
        if inv.get("DocNumber"):
            st.invoices_by_doc.setdefault(inv["DocNumber"], inv["Id"])
        st.qbo_event("Invoice", inv["Id"], "Update")
        st.touch("quickbooks")
        return Resp(200, envelope("Invoice", inv), mutated=True)
    if isinstance(body, dict):
        for k in ("TotalAmt", "Balance", "HomeBalance", "HomeTotalAmt", "MetaData", "domain", "sparse", "SyncToken"):
            body.pop(k, None)
        body.pop("Id", None)
    inv = build_invoice(st, body)
    inv["Id"] = st.new_qbo_id()
    st.qbo["invoices"][inv["Id"]] = inv
    if inv.get("DocNumber"):
        st.invoices_by_doc.setdefault(inv["DocNumber"], inv["Id"])
    st.qbo_event("Invoice", inv["Id"], "Create")
    st.touch("quickbooks")
    return Resp(200, envelope("Invoice", inv), mutated=True)


def void_invoice(st: SandboxState, rec: dict) -> None:
    cur = rec.get("CurrencyRef", {}).get("value") or st.home_currency
    zero = Decimal(0).quantize(money.quantum(cur))
    for line in rec.get("Line", []):
        line["Amount"] = zero
        det = line.get("SalesItemLineDetail")
        if det is not None:
            det["Qty"] = Decimal(0)
    rec["TotalAmt"] = zero
    rec["Balance"] = zero
    rec["TxnTaxDetail"] = {"TotalTax": zero}
    rec["PrivateNote"] = "Voided" + (f" - {rec['PrivateNote']}" if rec.get("PrivateNote") else "")
    rec["SyncToken"] = str(int(rec["SyncToken"]) + 1)
    rec["MetaData"]["LastUpdatedTime"] = meta_now()
    st.qbo_event("Invoice", rec["Id"], "Void")
    st.touch("quickbooks")


def payment_for(st: SandboxState, inv: dict, amount: Decimal) -> dict:
    """A received payment applied to one invoice, in QuickBooks' Payment shape: the invoice it
    pays is a ``Line[].LinkedTxn`` with ``TxnType`` Invoice (how a webhook's Payment id leads
    back to the invoice)."""
    now = meta_now()
    rec = {
        "Id": st.new_qbo_id(), "SyncToken": "0", "domain": "QBO", "sparse": False,
        "TxnDate": dt.date.today().isoformat(), "CustomerRef": dict(inv.get("CustomerRef") or {}),
        "TotalAmt": amount, "UnappliedAmt": Decimal(0).quantize(amount),
        "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": inv["Id"], "TxnType": "Invoice"}]}],
        "MetaData": {"CreateTime": now, "LastUpdatedTime": now},
    }
    if inv.get("CurrencyRef"):
        rec["CurrencyRef"] = dict(inv["CurrencyRef"])
    return rec


# ---------------------------------------------------------------------------- name lists
def _bad_display_name(name: str) -> str | None:
    if ":" in name or "\t" in name or "\n" in name or "\r" in name:
        return "DisplayName cannot contain a colon (:), a tab or a newline"
    if len(name) > 500:
        return "DisplayName is longer than 500 characters"
    if not name.strip():
        return "DisplayName cannot be empty"
    return None


def _norm_name(s: str) -> str:
    return " ".join(s.split()).casefold()


def post_customer(st: SandboxState, req: Req, realm: str) -> Resp:
    body = _loads(req)
    if not isinstance(body, dict):
        raise Fault("2010", "Request has invalid or unsupported property", "Customer body must be a JSON object")
    _unknown(body, CUSTOMER_FIELDS, "Customer")
    existing = None
    if body.get("Id") is not None:
        existing = _existing_for_update(st, "customers", body)
        if body.get("sparse") is True:
            merged = dict(existing)
            merged.update(body)
            body = merged
        if "CurrencyRef" in body and (body["CurrencyRef"] or {}).get("value") != (existing.get("CurrencyRef") or {}).get("value"):
            raise Fault("6000", "A business validation error has occurred while processing your request",
                        "Business Validation Error: CurrencyRef cannot be changed after the customer is created", element="CurrencyRef")
    name = body.get("DisplayName")
    if name is None:
        parts = [body.get(k) for k in ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")]
        parts = [p for p in parts if isinstance(p, str) and p.strip()]
        if not parts:
            raise _required("DisplayName")
        name = " ".join(parts)
    if not isinstance(name, str):
        raise Fault("2010", "Request has invalid or unsupported property", "DisplayName must be a string", element="DisplayName")
    bad = _bad_display_name(name)
    if bad:
        raise Fault("6000", "A business validation error has occurred while processing your request",
                    f"Business Validation Error: {bad}", element="DisplayName")
    key = _norm_name(name)
    for c in st.qbo["customers"].values():
        if (existing is None or c["Id"] != existing["Id"]) and _norm_name(c["DisplayName"]) == key:
            raise Fault("6240", "Duplicate Name Exists Error",
                        f"The name supplied already exists. : Another customer is already using this name. Please use a "
                        f"different name. (Id={c['Id']})", element="")
    if existing is None:
        if "CurrencyRef" in body:
            cur = _ref_value(body["CurrencyRef"], "CurrencyRef")
            if not st.multicurrency and cur != st.home_currency:
                raise Fault("6000", "A business validation error has occurred while processing your request",
                            "Business Validation Error: Multicurrency is not enabled for this company; "
                            f"CurrencyRef must be the home currency {st.home_currency}.", element="CurrencyRef")
            try:
                money.minor_units(cur)
            except money.UnknownCurrencyError as exc:
                raise Fault("2500", "Invalid Reference Id", f"Invalid Reference Id : currency {cur}", element="CurrencyRef") from exc
        else:
            cur = st.home_currency
    else:
        cur = (existing.get("CurrencyRef") or {}).get("value") or st.home_currency
    if "SalesTermRef" in body:
        _resolve(st, "terms", body["SalesTermRef"], "SalesTermRef")
    now = meta_now()
    rec: dict[str, Any] = {
        "Taxable": False, "Job": False, "BillWithParent": False, "Balance": Decimal("0.00"), "BalanceWithJobs": Decimal("0.00"),
        "PreferredDeliveryMethod": "Print", "IsProject": False,
    }
    for k, v in body.items():
        if k not in ("Id", "SyncToken", "sparse", "domain", "MetaData", "Balance", "BalanceWithJobs", "FullyQualifiedName"):
            rec[k] = v
    rec.update({
        "domain": "QBO", "sparse": False,
        "Id": existing["Id"] if existing else st.new_qbo_id(),
        "SyncToken": str(int(existing["SyncToken"]) + 1) if existing else "0",
        "MetaData": {"CreateTime": existing["MetaData"]["CreateTime"] if existing and existing.get("MetaData") else now, "LastUpdatedTime": now},
        "DisplayName": name, "FullyQualifiedName": name, "PrintOnCheckName": body.get("PrintOnCheckName", name),
        "Active": bool(body.get("Active", True)), "CurrencyRef": _currency_ref(cur),
    })
    if existing:
        rec["Balance"] = existing.get("Balance", rec["Balance"])
        rec["BalanceWithJobs"] = existing.get("BalanceWithJobs", rec["BalanceWithJobs"])
    st.qbo["customers"][rec["Id"]] = rec
    st.qbo_event("Customer", rec["Id"], "Update" if existing else "Create")
    st.touch("quickbooks")
    return Resp(200, envelope("Customer", rec), mutated=True)


def post_simple(coll: str) -> Callable[..., Resp]:
    entity = QBO_ENTITY[coll]

    def handler(st: SandboxState, req: Req, realm: str) -> Resp:
        body = _loads(req)
        if not isinstance(body, dict):
            raise Fault("2010", "Request has invalid or unsupported property", f"{entity} body must be a JSON object")
        existing = _existing_for_update(st, coll, body) if body.get("Id") is not None else None
        if existing and body.get("sparse") is True:
            merged = dict(existing)
            merged.update(body)
            body = merged
        name = body.get("Name")
        if not isinstance(name, str) or not name.strip():
            raise _required("Name")
        if ":" in name:
            raise Fault("6000", "A business validation error has occurred while processing your request",
                        "Business Validation Error: Name cannot contain a colon (:)", element="Name")
        for r in st.qbo[coll].values():
            if (existing is None or r["Id"] != existing["Id"]) and _norm_name(r.get("Name") or "") == _norm_name(name):
                raise Fault("6240", "Duplicate Name Exists Error",
                            f"The name supplied already exists. : Another {entity.lower()} is already using this name. (Id={r['Id']})")
        if coll == "items" and body.get("Type", "Service") not in ("Service", "NonInventory", "Inventory", "Category", "Group"):
            raise Fault("2170", "Invalid Enumeration", f"Type: invalid value {body.get('Type')!r}", element="Type")
        now = meta_now()
        rec = {k: v for k, v in body.items() if k not in ("Id", "SyncToken", "sparse", "domain", "MetaData")}
        rec.update({
            "domain": "QBO", "sparse": False, "Id": existing["Id"] if existing else st.new_qbo_id(),
            "SyncToken": str(int(existing["SyncToken"]) + 1) if existing else "0",
            "MetaData": {"CreateTime": (existing or {}).get("MetaData", {}).get("CreateTime", now), "LastUpdatedTime": now},
            "Name": name, "Active": bool(body.get("Active", True)),
        })
        if coll in ("items", "classes"):
            rec.setdefault("FullyQualifiedName", name)
        if coll == "items":
            rec.setdefault("Type", "Service")
        st.qbo[coll][rec["Id"]] = rec
        st.qbo_event(entity, rec["Id"], "Update" if existing else "Create")
        st.touch("quickbooks")
        return Resp(200, envelope(entity, rec), mutated=True)

    return handler


def read_entity(st: SandboxState, req: Req, realm: str, entity: str, id: str) -> Resp:
    coll = PATH_ENTITY.get(entity)
    if coll is None:
        raise Fault("500", "Unsupported Operation", f"Operation Could not find resource for relative : /v3/company/{realm}/{entity}/{id}")
    rec = st.qbo[coll].get(id)
    if rec is None:
        raise _not_found(QBO_ENTITY[coll], id)
    return Resp(200, envelope(QBO_ENTITY[coll], rec))


def read_preferences(st: SandboxState, req: Req, realm: str) -> Resp:
    return Resp(200, envelope("Preferences", _preferences(st)))


def _preferences(st: SandboxState) -> dict:
    p = dict(st.preferences)
    p.setdefault("domain", "QBO")
    p.setdefault("sparse", False)
    p.setdefault("Id", "1")
    p.setdefault("SyncToken", "0")
    return p


def _company_info(st: SandboxState) -> dict:
    info = {"CompanyName": "Sandbox Company", "LegalName": "Sandbox Company", "Country": "US", **st.company_info}
    info.update({"domain": "QBO", "sparse": False, "Id": "1", "SyncToken": "0"})
    return info


def read_company_info(st: SandboxState, req: Req, realm: str, id: str) -> Resp:
    return Resp(200, envelope("CompanyInfo", _company_info(st)))


def query(st: SandboxState, req: Req, realm: str) -> Resp:
    if req.method == "POST":
        text = req.body.decode("utf-8", errors="replace")
    else:
        text = req.q("query") or ""
    if not text.strip():
        raise Fault("4000", "Error parsing query", "QueryParserError: Encountered <EOF>: the query is empty")
    try:
        q = qbo_query.parse(text, QUERYABLE)
    except qbo_query.QueryError as exc:
        msg = "Error parsing query" if exc.code == "4000" else "Invalid query"
        raise Fault(exc.code, msg, exc.detail) from exc
    if q.entity == "Preferences":
        records, name_list = [_preferences(st)], False
    elif q.entity == "CompanyInfo":
        records, name_list = [_company_info(st)], False
    else:
        coll = ENTITY_COLL[q.entity]
        records, name_list = list(st.qbo[coll].values()), coll in NAME_LIST
    res = qbo_query.execute(q, records, name_list=name_list)
    if isinstance(res, int):
        return Resp(200, {"QueryResponse": {"totalCount": res}, "time": qbo_time()})
    if not res:
        return Resp(200, {"QueryResponse": {}, "time": qbo_time()})
    return Resp(200, {"QueryResponse": {q.entity: res, "startPosition": q.start_position, "maxResults": len(res)}, "time": qbo_time()})


def _parse_ts(v: str) -> dt.datetime | None:
    try:
        d = dt.datetime.fromisoformat(v.strip().replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        try:
            d = dt.datetime.fromisoformat(v.strip()[:10])
        except ValueError:
            return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=PACIFIC)
    return d


CDC_MAX = 1000


def cdc(st: SandboxState, req: Req, realm: str) -> Resp:
    """GET .../cdc?entities=Invoice,Customer&changedSince=ISO (within the last 30 days)."""
    ents = [e.strip() for e in (req.q("entities") or "").split(",") if e.strip()]
    if not ents:
        raise _required("entities")
    since_raw = req.q("changedSince")
    if not since_raw:
        raise _required("changedSince")
    since = _parse_ts(since_raw)
    if since is None:
        raise Fault("2010", "Request has invalid or unsupported property", f"changedSince: {since_raw!r} is not an ISO-8601 date-time",
                    element="changedSince")
    now = dt.datetime.now(dt.timezone.utc)
    if since < now - dt.timedelta(days=30):
        raise Fault("2010", "Request has invalid or unsupported property",
                    "changedSince must be within the last 30 days", element="changedSince")
    canon = {v.lower(): v for v in ENTITY_COLL}
    blocks = []
    budget = CDC_MAX
    for e in ents:
        entity = canon.get(e.lower())
        if entity is None:
            raise Fault("2010", "Request has invalid or unsupported property", f"entities: {e} is not supported by CDC", element="entities")

        def changed_at(r: dict) -> dt.datetime:
            return _parse_ts((r.get("MetaData") or {}).get("LastUpdatedTime") or "") or dt.datetime.min.replace(tzinfo=dt.timezone.utc)

        live = [r for r in st.qbo[ENTITY_COLL[entity]].values() if changed_at(r) >= since]
        live.sort(key=changed_at)
        dead = [{"domain": "QBO", "status": "Deleted", "Id": d["Id"], "MetaData": {"LastUpdatedTime": d["LastUpdatedTime"]}}
                for d in st.qbo_deleted if d["entity"] == entity and (_parse_ts(d["LastUpdatedTime"]) or since) >= since]
        rows = (live + dead)[:budget]
        budget -= len(rows)
        blocks.append({entity: rows, "startPosition": 1, "maxResults": len(rows)} if rows else {})
    return Resp(200, {"CDCResponse": [{"QueryResponse": blocks}], "time": qbo_time()})


BATCH_MAX = 30
BATCH_ENTITIES = {"Invoice": ("invoice", None), "Customer": ("customer", None), "Item": ("item", None),
                  "Class": ("class", None), "Term": ("term", None)}


def batch(st: SandboxState, req: Req, realm: str) -> Resp:
    """POST .../batch: up to 30 independent items; HTTP 200 even when items fail."""
    body = _loads(req)
    items = body.get("BatchItemRequest") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise _required("BatchItemRequest")
    if len(items) > BATCH_MAX:
        raise Fault("1000", "Request has invalid or unsupported property",
                    f"Batch request has {len(items)} items; the maximum is {BATCH_MAX}")
    out = []
    seen: set[str] = set()
    for item in items:
        bid = item.get("bId") if isinstance(item, dict) else None
        if not isinstance(bid, str) or not bid:
            raise _required("bId")
        if bid in seen:
            raise Fault("2010", "Request has invalid or unsupported property", f"duplicate bId {bid}", element="bId")
        seen.add(bid)
        if req.q("requestid") and len(bid) > 10:
            raise Fault("2050", "String length is either shorter or longer than supported by specification",
                        f"bId {bid!r}: at most 10 characters when the batch carries a requestid", element="bId")
        try:
            if "Query" in item:
                sub = Req("POST", req.path, [], req.headers, str(item["Query"]).encode(), req.base_url)
                res = query(st, sub, realm)
                out.append({"bId": bid, "QueryResponse": res.body["QueryResponse"]})
                continue
            entity = next((k for k in item if k in BATCH_ENTITIES), None)
            if entity is None:
                raise Fault("2010", "Request has invalid or unsupported property", f"batch item {bid}: no supported entity")
            op = item.get("operation", "create")
            payload = item[entity]
            if op == "create" and isinstance(payload, dict) and payload.get("Id") is not None:
                raise Fault("2010", "Request has invalid or unsupported property", "Id is not allowed on create", element="Id")
            params = [("operation", "delete")] if op == "delete" else []
            if op not in ("create", "update", "delete"):
                raise Fault("2170", "Invalid Enumeration", f"operation {op!r}", element="operation")
            sub = Req("POST", req.path, params, req.headers, money.dumps(payload).encode(), req.base_url)
            handler = {"Invoice": post_invoice, "Customer": post_customer, "Item": post_simple("items"),
                       "Class": post_simple("classes"), "Term": post_simple("terms")}[entity]
            if op == "delete" and entity != "Invoice":
                raise Fault("500", "Unsupported Operation", f"{entity} cannot be deleted; make it inactive")
            res = handler(st, sub, realm)
            out.append({"bId": bid, entity: res.body[entity]})
        except Fault as f:
            out.append({"bId": bid, "Fault": {"type": f.ftype, "Error": [{"Message": f.message, "Detail": f.detail,
                                                                           "code": f.code, "element": f.element}]}})
    return Resp(200, {"BatchItemResponse": out, "time": qbo_time()}, mutated=True)


ROUTES: list[tuple[str, str, Callable[..., Resp]]] = [
    ("GET", r"/v3/company/(?P<realm>[^/]+)/cdc", cdc),
    ("POST", r"/v3/company/(?P<realm>[^/]+)/batch", batch),
    ("GET", r"/v3/company/(?P<realm>[^/]+)/query", query),
    ("POST", r"/v3/company/(?P<realm>[^/]+)/query", query),
    ("POST", r"/v3/company/(?P<realm>[^/]+)/invoice", post_invoice),
    ("POST", r"/v3/company/(?P<realm>[^/]+)/customer", post_customer),
    ("POST", r"/v3/company/(?P<realm>[^/]+)/item", post_simple("items")),
    ("POST", r"/v3/company/(?P<realm>[^/]+)/class", post_simple("classes")),
    ("POST", r"/v3/company/(?P<realm>[^/]+)/term", post_simple("terms")),
    ("GET", r"/v3/company/(?P<realm>[^/]+)/preferences", read_preferences),
    ("GET", r"/v3/company/(?P<realm>[^/]+)/companyinfo/(?P<id>[^/]+)", read_company_info),
    ("GET", r"/v3/company/(?P<realm>[^/]+)/(?P<entity>[a-z]+)/(?P<id>\d+)", read_entity),
]


# ---------------------------------------------------------------------------- OAuth
def _oauth_error(status: int, error: str, desc: str | None = None) -> Resp:
    body = {"error": error}
    if desc:
        body["error_description"] = desc
    return Resp(status, body, headers={"Cache-Control": "no-store"})


#: Intuit's scope for the Accounting API; the sandbox serves no other.
ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
AUTH_CODE_TTL_S = 300


def authorize_endpoint(st: SandboxState, req: Req) -> Resp:
    """GET /connect/oauth2 (Intuit: appcenter.intuit.com/connect/oauth2): the user's consent.

    The sandbox's user always consents: a valid request redirects (302) to ``redirect_uri`` with
    ``code``, ``state`` and ``realmId``, as Intuit does; ``client_id``, ``response_type=code``,
    the accounting ``scope``, ``redirect_uri`` and ``state`` are required. A request the sandbox
    cannot redirect (unknown client, no redirect URI) gets a 400 page; one with a bad parameter
    but a usable redirect URI is redirected with ``error`` (RFC 6749 §4.1.2.1).
    """
    redirect = req.q("redirect_uri")
    if req.q("client_id") != credentials.QBO_CLIENT_ID or not redirect or not redirect.startswith(("http://", "https://")):
        return Resp(400, "invalid_client or redirect_uri: the app is unknown or the redirect URI is missing",
                    content_type="text/plain")
    state = req.q("state")
    sep = "&" if "?" in redirect else "?"
    problem = None
    if req.q("response_type") != "code":
        problem = "unsupported_response_type"
    elif ACCOUNTING_SCOPE not in (req.q("scope") or "").split():
        problem = "invalid_scope"
    elif not state:
        problem = "invalid_request"
    if problem:
        params = [("error", problem)] + ([("state", state)] if state else [])
        return Resp(302, b"", headers={"Location": redirect + sep + urlencode(params)}, content_type="text/plain")
    code = "sbx-ac-" + secrets.token_urlsafe(24)
    # the user picks the company on Intuit's consent screen; the code is for that company only
    realm = st.consent_realm or st.realm_id
    st.auth_codes = {c: v for c, v in st.auth_codes.items() if v["expires"] > time.time()}
    st.auth_codes[code] = {"redirect_uri": redirect, "expires": int(time.time()) + AUTH_CODE_TTL_S, "realm_id": realm}
    st.touch("sandbox")
    location = redirect + sep + urlencode([("code", code), ("state", state), ("realmId", realm)])
    return Resp(302, b"", headers={"Location": location}, content_type="text/plain", mutated=True)


def token_endpoint(st: SandboxState, req: Req, rotate: str | int = "always") -> Resp:
    """POST /oauth2/v1/tokens/bearer (Basic client auth; grant_type refresh_token, or
    authorization_code with the code /connect/oauth2 issued: single use, 5 minutes, bound to
    its redirect_uri)."""
    auth = req.headers.get("authorization", "")
    ok = False
    if auth[:6].lower() == "basic ":
        try:
            cid, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
            ok = cid == credentials.QBO_CLIENT_ID and secret == credentials.QBO_CLIENT_SECRET
        except (ValueError, UnicodeDecodeError):
            ok = False
    if not ok:
        return _oauth_error(401, "invalid_client")
    form = dict(parse_qsl(req.body.decode("utf-8", errors="replace")))
    grant = form.get("grant_type")
    new_connection = False
    if grant == "authorization_code":
        issued = st.auth_codes.pop(form.get("code") or "", None)
        st.touch("sandbox")
        if issued is None or issued["expires"] <= time.time() or issued["redirect_uri"] != form.get("redirect_uri"):
            return _oauth_error(400, "invalid_grant")
        book = st.books.get(issued.get("realm_id") or st.realm_id)
        if book is None:
            return _oauth_error(400, "invalid_grant")
        new_connection = True
    elif grant != "refresh_token":
        return _oauth_error(400, "unsupported_grant_type" if grant else "invalid_request")
    else:
        # a refresh token belongs to one company's connection; the tokens it mints are bound to it
        book = st.book_of_refresh_token(form.get("refresh_token"))
        if book is None:
            return _oauth_error(400, "invalid_grant")
    now = time.time()
    access = "sbx-at-" + secrets.token_urlsafe(24)
    # drop expired access tokens so the state does not grow without bound
    st.access_tokens = {t: e for t, e in st.access_tokens.items() if e > now}
    st.access_token_realms = {t: r for t, r in st.access_token_realms.items() if t in st.access_tokens}
    st.access_tokens[access] = int(now) + credentials.ACCESS_TOKEN_TTL_S
    st.access_token_realms[access] = book.realm_id
    st.refresh_serial += 1
    if new_connection or rotate == "always" or (isinstance(rotate, int) and rotate > 0 and st.refresh_serial % rotate == 0):
        # a new connection supersedes the company's earlier refresh token
        book.refresh_token = f"sbx-rt-{st.refresh_serial}-" + secrets.token_urlsafe(16)
    st.touch("sandbox")
    body = {"token_type": "bearer", "access_token": access, "expires_in": credentials.ACCESS_TOKEN_TTL_S,
            "refresh_token": book.refresh_token, "x_refresh_token_expires_in": credentials.REFRESH_TOKEN_TTL_S}
    if req.headers.get("x-include-refresh-token-hard-expires-in", "").lower() == "true":
        body["x_refresh_token_hard_expires_in"] = 5 * 365 * 86400
    return Resp(200, body, headers={"Cache-Control": "no-store"}, mutated=True)


__all__ = ["ROUTES", "Fault", "check_auth", "token_endpoint"]
