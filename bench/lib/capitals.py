"""Countries and their capitals: the facts behind the benchmarks' judged task (short factual answers that no
program in the round can check; the benchmark's hidden checker reads this table)."""

from __future__ import annotations

__all__ = ["CAPITALS"]

#: (country, capital), one capital each (the seat of government where it is the better-known).
CAPITALS: tuple[tuple[str, str], ...] = (
    ("Afghanistan", "Kabul"), ("Albania", "Tirana"), ("Algeria", "Algiers"), ("Andorra", "Andorra la Vella"),
    ("Angola", "Luanda"), ("Argentina", "Buenos Aires"), ("Armenia", "Yerevan"), ("Australia", "Canberra"),
    ("Austria", "Vienna"), ("Azerbaijan", "Baku"), ("Bahrain", "Manama"), ("Bangladesh", "Dhaka"),
    ("Belarus", "Minsk"), ("Belgium", "Brussels"), ("Belize", "Belmopan"), ("Benin", "Porto-Novo"),
    ("Bhutan", "Thimphu"), ("Bolivia", "Sucre"), ("Botswana", "Gaborone"), ("Brazil", "Brasilia"),
    ("Bulgaria", "Sofia"), ("Burkina Faso", "Ouagadougou"), ("Burundi", "Gitega"), ("Cambodia", "Phnom Penh"),
    ("Cameroon", "Yaounde"), ("Canada", "Ottawa"), ("Chad", "N'Djamena"), ("Chile", "Santiago"),
    ("China", "Beijing"), ("Colombia", "Bogota"), ("Costa Rica", "San Jose"), ("Croatia", "Zagreb"),
    ("Cuba", "Havana"), ("Cyprus", "Nicosia"), ("Czech Republic", "Prague"), ("Denmark", "Copenhagen"),
    ("Djibouti", "Djibouti"), ("Dominican Republic", "Santo Domingo"), ("Ecuador", "Quito"), ("Egypt", "Cairo"),
    ("El Salvador", "San Salvador"), ("Eritrea", "Asmara"), ("Estonia", "Tallinn"), ("Ethiopia", "Addis Ababa"),
    ("Fiji", "Suva"), ("Finland", "Helsinki"), ("France", "Paris"), ("Gabon", "Libreville"),
    ("Georgia", "Tbilisi"), ("Germany", "Berlin"), ("Ghana", "Accra"), ("Greece", "Athens"),
    ("Guatemala", "Guatemala City"), ("Guinea", "Conakry"), ("Guyana", "Georgetown"), ("Haiti", "Port-au-Prince"),
    ("Honduras", "Tegucigalpa"), ("Hungary", "Budapest"), ("Iceland", "Reykjavik"), ("India", "New Delhi"),
    ("Indonesia", "Jakarta"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Ireland", "Dublin"),
    ("Israel", "Jerusalem"), ("Italy", "Rome"), ("Jamaica", "Kingston"), ("Japan", "Tokyo"),
    ("Jordan", "Amman"), ("Kazakhstan", "Astana"), ("Kenya", "Nairobi"), ("Kuwait", "Kuwait City"),
    ("Kyrgyzstan", "Bishkek"), ("Laos", "Vientiane"), ("Latvia", "Riga"), ("Lebanon", "Beirut"),
    ("Lesotho", "Maseru"), ("Liberia", "Monrovia"), ("Libya", "Tripoli"), ("Liechtenstein", "Vaduz"),
    ("Lithuania", "Vilnius"), ("Luxembourg", "Luxembourg"), ("Madagascar", "Antananarivo"),
    ("Malawi", "Lilongwe"), ("Malaysia", "Kuala Lumpur"), ("Maldives", "Male"), ("Mali", "Bamako"),
    ("Malta", "Valletta"), ("Mauritania", "Nouakchott"), ("Mauritius", "Port Louis"), ("Mexico", "Mexico City"),
    ("Moldova", "Chisinau"), ("Monaco", "Monaco"), ("Mongolia", "Ulaanbaatar"), ("Montenegro", "Podgorica"),
    ("Morocco", "Rabat"), ("Mozambique", "Maputo"), ("Myanmar", "Naypyidaw"), ("Namibia", "Windhoek"),
    ("Nepal", "Kathmandu"), ("Netherlands", "Amsterdam"), ("New Zealand", "Wellington"),
    ("Nicaragua", "Managua"), ("Niger", "Niamey"), ("Nigeria", "Abuja"), ("North Korea", "Pyongyang"),
    ("North Macedonia", "Skopje"), ("Norway", "Oslo"), ("Oman", "Muscat"), ("Pakistan", "Islamabad"),
    ("Panama", "Panama City"), ("Papua New Guinea", "Port Moresby"), ("Paraguay", "Asuncion"), ("Peru", "Lima"),
    ("Philippines", "Manila"), ("Poland", "Warsaw"), ("Portugal", "Lisbon"), ("Qatar", "Doha"),
    ("Romania", "Bucharest"), ("Russia", "Moscow"), ("Rwanda", "Kigali"), ("Samoa", "Apia"),
    ("San Marino", "San Marino"), ("Saudi Arabia", "Riyadh"), ("Senegal", "Dakar"), ("Serbia", "Belgrade"),
    ("Sierra Leone", "Freetown"), ("Singapore", "Singapore"), ("Slovakia", "Bratislava"),
    ("Slovenia", "Ljubljana"), ("Somalia", "Mogadishu"), ("South Africa", "Pretoria"),
    ("South Korea", "Seoul"), ("South Sudan", "Juba"), ("Spain", "Madrid"), ("Sri Lanka", "Colombo"),
    ("Sudan", "Khartoum"), ("Suriname", "Paramaribo"), ("Sweden", "Stockholm"), ("Switzerland", "Bern"),
    ("Syria", "Damascus"), ("Taiwan", "Taipei"), ("Tajikistan", "Dushanbe"), ("Tanzania", "Dodoma"),
    ("Thailand", "Bangkok"), ("Togo", "Lome"), ("Tonga", "Nuku'alofa"), ("Tunisia", "Tunis"),
    ("Turkey", "Ankara"), ("Turkmenistan", "Ashgabat"), ("Uganda", "Kampala"), ("Ukraine", "Kyiv"),
    ("United Arab Emirates", "Abu Dhabi"), ("United Kingdom", "London"), ("United States", "Washington"),
    ("Uruguay", "Montevideo"), ("Uzbekistan", "Tashkent"), ("Vanuatu", "Port Vila"), ("Venezuela", "Caracas"),
    ("Vietnam", "Hanoi"), ("Yemen", "Sanaa"), ("Zambia", "Lusaka"), ("Zimbabwe", "Harare"),
)  # fmt: skip
