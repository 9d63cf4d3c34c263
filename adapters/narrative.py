"""Narrative for IPS sections: XHTML built safely, with labels in the languages patients bring.

FHIR R4 narrative (§2.4 Narrative) is a limited XHTML ``div``; multi-language narrative puts one
block per language, each with ``lang``/``xml:lang`` (FHIR "Multi-language support"). The source
language block comes first and is what the hospital recorded; every other block is a rendition,
marked ``class="translation"`` and introduced by a sentence saying that it is a translation and
that the original is authoritative.

Only fixed labels are translated here. Clinical terms in a rendition come from the international
codings (LOINC, SNOMED CT, WHO ICD-10, ATC ...), never from machine translation of free text;
free text without such a coding is shown in the original, flagged as untranslated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape, quoteattr

XHTML_NS = "http://www.w3.org/1999/xhtml"

# Base language -> the BCP 47 tag used in narrative and extensions.
TAGS = {"zh": "zh-CN", "en": "en", "ko": "ko", "ru": "ru", "ar": "ar", "th": "th"}
RIGHT_TO_LEFT = frozenset({"ar"})

LABELS: dict[str, dict[str, str]] = {
    "en": {
        "title": "International Patient Summary",
        "problems": "Problem List",
        "past_illness": "History of Past Illness",
        "allergies": "Allergies and Intolerances",
        "medications": "Medication Summary",
        "immunizations": "Immunizations",
        "procedures": "History of Procedures",
        "devices": "Medical Devices",
        "results": "Results",
        "vital_signs": "Vital Signs",
        "col_item": "Item",
        "col_code": "Code",
        "col_status": "Status",
        "col_date": "Date",
        "col_value": "Value",
        "col_details": "Details",
        "empty_problems": "No information about problems is available in the source records.",
        "empty_allergies": (
            "No information about allergies or intolerances is available in the source records."
        ),
        "empty_medications": "No information about medications is available in the source records.",
        "translation_note": (
            "Translation ({lang}) generated from the coded entries. "
            "The original text ({source}) above is authoritative."
        ),
        "untranslated": "no {lang} term; original",
        "patient": "Patient",
        "birth_date": "Date of birth",
        "summary_date": "Summary date",
    },
    "zh": {
        "title": "国际患者摘要",
        "problems": "问题列表",
        "past_illness": "既往病史",
        "allergies": "过敏与不耐受",
        "medications": "用药摘要",
        "immunizations": "免疫接种",
        "procedures": "手术操作史",
        "devices": "医疗器械",
        "results": "检查检验结果",
        "vital_signs": "生命体征",
        "col_item": "项目",
        "col_code": "编码",
        "col_status": "状态",
        "col_date": "日期",
        "col_value": "结果",
        "col_details": "说明",
        "empty_problems": "源记录中没有关于健康问题的信息。",
        "empty_allergies": "源记录中没有关于过敏或不耐受的信息。",
        "empty_medications": "源记录中没有关于用药的信息。",
        "translation_note": "译文（{lang}），根据编码条目生成。以上原文（{source}）为准。",
        "untranslated": "无{lang}术语；原文",
        "patient": "患者",
        "birth_date": "出生日期",
        "summary_date": "摘要日期",
    },
    "ko": {
        "title": "국제 환자 요약",
        "problems": "문제 목록",
        "past_illness": "과거 병력",
        "allergies": "알레르기 및 과민반응",
        "medications": "투약 요약",
        "immunizations": "예방접종",
        "procedures": "시술 이력",
        "devices": "의료기기",
        "results": "검사 결과",
        "vital_signs": "활력징후",
        "col_item": "항목",
        "col_code": "코드",
        "col_status": "상태",
        "col_date": "날짜",
        "col_value": "결과값",
        "col_details": "세부사항",
        "empty_problems": "원본 기록에 건강 문제에 관한 정보가 없습니다.",
        "empty_allergies": "원본 기록에 알레르기 또는 과민반응에 관한 정보가 없습니다.",
        "empty_medications": "원본 기록에 투약에 관한 정보가 없습니다.",
        "translation_note": (
            "번역({lang}): 코드화된 항목에서 생성되었습니다. 위의 원문({source})이 우선합니다."
        ),
        "untranslated": "{lang} 용어 없음; 원문",
        "patient": "환자",
        "birth_date": "생년월일",
        "summary_date": "요약 작성일",
    },
    "ru": {
        "title": "Международная сводка о пациенте",
        "problems": "Список проблем",
        "past_illness": "Перенесённые заболевания",
        "allergies": "Аллергии и непереносимость",
        "medications": "Сводка лекарственной терапии",
        "immunizations": "Иммунизация",
        "procedures": "Проведённые процедуры",
        "devices": "Медицинские изделия",
        "results": "Результаты исследований",
        "vital_signs": "Показатели жизненно важных функций",
        "col_item": "Наименование",
        "col_code": "Код",
        "col_status": "Статус",
        "col_date": "Дата",
        "col_value": "Значение",
        "col_details": "Подробности",
        "empty_problems": "В исходных записях нет сведений о проблемах со здоровьем.",
        "empty_allergies": "В исходных записях нет сведений об аллергиях или непереносимости.",
        "empty_medications": "В исходных записях нет сведений о лекарственных препаратах.",
        "translation_note": (
            "Перевод ({lang}), созданный по кодированным данным. "
            "Приоритет имеет исходный текст ({source}) выше."
        ),
        "untranslated": "нет термина ({lang}); оригинал",
        "patient": "Пациент",
        "birth_date": "Дата рождения",
        "summary_date": "Дата сводки",
    },
    "ar": {
        "title": "الملخص الدولي للمريض",
        "problems": "قائمة المشكلات الصحية",
        "past_illness": "تاريخ الأمراض السابقة",
        "allergies": "الحساسية وعدم التحمل",
        "medications": "ملخص الأدوية",
        "immunizations": "التطعيمات",
        "procedures": "تاريخ الإجراءات",
        "devices": "الأجهزة الطبية",
        "results": "النتائج",
        "vital_signs": "العلامات الحيوية",
        "col_item": "البند",
        "col_code": "الرمز",
        "col_status": "الحالة",
        "col_date": "التاريخ",
        "col_value": "القيمة",
        "col_details": "التفاصيل",
        "empty_problems": "لا تتوفر في السجلات المصدر معلومات عن المشكلات الصحية.",
        "empty_allergies": "لا تتوفر في السجلات المصدر معلومات عن الحساسية أو عدم التحمل.",
        "empty_medications": "لا تتوفر في السجلات المصدر معلومات عن الأدوية.",
        "translation_note": (
            "ترجمة ({lang}) مُولَّدة من البيانات المرمَّزة. النص الأصلي ({source}) أعلاه هو المعتمد."
        ),
        "untranslated": "لا يوجد مصطلح ({lang})؛ الأصل",
        "patient": "المريض",
        "birth_date": "تاريخ الميلاد",
        "summary_date": "تاريخ الملخص",
    },
    "th": {
        "title": "สรุปข้อมูลผู้ป่วยระหว่างประเทศ",
        "problems": "รายการปัญหาสุขภาพ",
        "past_illness": "ประวัติการเจ็บป่วยในอดีต",
        "allergies": "การแพ้และการไม่ทนต่อสาร",
        "medications": "สรุปรายการยา",
        "immunizations": "การได้รับวัคซีน",
        "procedures": "ประวัติหัตถการ",
        "devices": "อุปกรณ์การแพทย์",
        "results": "ผลการตรวจ",
        "vital_signs": "สัญญาณชีพ",
        "col_item": "รายการ",
        "col_code": "รหัส",
        "col_status": "สถานะ",
        "col_date": "วันที่",
        "col_value": "ค่า",
        "col_details": "รายละเอียด",
        "empty_problems": "ไม่มีข้อมูลเกี่ยวกับปัญหาสุขภาพในเวชระเบียนต้นทาง",
        "empty_allergies": "ไม่มีข้อมูลเกี่ยวกับการแพ้หรือการไม่ทนต่อสารในเวชระเบียนต้นทาง",
        "empty_medications": "ไม่มีข้อมูลเกี่ยวกับการใช้ยาในเวชระเบียนต้นทาง",
        "translation_note": (
            "คำแปล ({lang}) สร้างจากข้อมูลที่มีรหัส ข้อความต้นฉบับ ({source}) ด้านบนถือเป็นหลัก"
        ),
        "untranslated": "ไม่มีคำศัพท์ภาษา {lang}; ต้นฉบับ",
        "patient": "ผู้ป่วย",
        "birth_date": "วันเกิด",
        "summary_date": "วันที่จัดทำสรุป",
    },
}

# Status codes in the source narrative of Chinese documents; other languages show the FHIR code,
# which is itself the international term.
STATUS_ZH = {
    "active": "活动",
    "inactive": "非活动",
    "resolved": "已痊愈",
    "remission": "缓解",
    "recurrence": "复发",
    "relapse": "复发",
    "confirmed": "已确认",
    "unconfirmed": "未确认",
    "provisional": "初步",
    "differential": "鉴别",
    "completed": "已完成",
    "in-progress": "进行中",
    "stopped": "已停止",
    "on-hold": "暂停",
    "intended": "拟用",
    "final": "最终",
    "preliminary": "初步",
    "amended": "已修正",
    "corrected": "已更正",
    "high": "高危",
    "low": "低危",
    "unable-to-assess": "无法评估",
}


def base_language(tag: str | None) -> str | None:
    """``zh-CN`` -> ``zh``, ``en-US`` -> ``en``; None for no tag."""
    if not tag:
        return None
    return tag.split("-")[0].lower()


def supported(tag: str | None) -> bool:
    return base_language(tag) in LABELS


def label(language: str, key: str, **values: str) -> str:
    """A fixed label in ``language`` (a base language with labels); ``values`` fill it in."""
    return LABELS[language][key].format(**values)


def status_text(lang: str, code: str | None) -> str:
    if not code:
        return ""
    if lang == "zh":
        return STATUS_ZH.get(code, code)
    return code


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def text(value: str) -> str:
    """Character data for XHTML: escaped, with characters XML 1.0 cannot carry replaced."""
    return escape(_NOT_XML.sub("\ufffd", value))


def element(tag: str, attrs: dict[str, str] | None = None, *children: str) -> str:
    """An XHTML element; children are already-built markup (use :func:`text` for strings)."""
    rendered = "".join(f" {k}={quoteattr(_NOT_XML.sub('', v))}" for k, v in (attrs or {}).items())
    return f"<{tag}{rendered}>{''.join(children)}</{tag}>"


def lang_attrs(tag: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    attrs = dict(extra or {})
    attrs["lang"] = tag
    attrs["xml:lang"] = tag
    if base_language(tag) in RIGHT_TO_LEFT:
        attrs["dir"] = "rtl"
    return attrs


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A table; header labels and cell strings are plain text."""
    cells = (element("th", None, text(h)) for h in headers)
    head = element("thead", None, element("tr", None, *cells))
    body_rows = [element("tr", None, *(element("td", None, text(c)) for c in row)) for row in rows]
    return element("table", {"class": "grid"}, head, element("tbody", None, *body_rows))


def root_div(source_tag: str, source_block: str, renditions: Sequence[tuple[str, str]]) -> str:
    """The narrative ``div``: the source block, then one marked block per translation."""
    parts = [source_block]
    for tag, block in renditions:
        parts.append(element("div", lang_attrs(tag, {"class": "translation"}), block))
    attrs = {"xmlns": XHTML_NS}
    attrs.update(lang_attrs(source_tag))
    return element("div", attrs, *parts)


def translation_note(lang: str, target_tag: str, source_tag: str) -> str:
    return element(
        "p",
        None,
        element(
            "i", None, text(label(lang, "translation_note", lang=target_tag, source=source_tag))
        ),
    )


def translation_extension(tag: str, content: str) -> dict[str, object]:
    """The core ``translation`` extension (http://hl7.org/fhir/StructureDefinition/translation)."""
    return {
        "url": "http://hl7.org/fhir/StructureDefinition/translation",
        "extension": [
            {"url": "lang", "valueCode": tag},
            {"url": "content", "valueString": content},
        ],
    }
