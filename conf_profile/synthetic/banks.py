"""Text banks for the synthetic user logs: cues per taxonomy value, noise, and the joint distribution.

Per value: ``topics`` (what such a user watches or searches), ``says`` (first-person fragments that
leak the value in comments) and ``bio`` (explicit self-descriptions). Values of the default taxonomy.
"""

from __future__ import annotations

# P(value) and conditionals of the hidden truth. Tuples of (value, weight).
AGE = (("under_18", 8), ("age_18_24", 17), ("age_25_34", 25), ("age_35_44", 20), ("age_45_54", 15),
       ("age_55_plus", 15))
LIFE_STAGE_GIVEN_AGE = {
    "under_18": (("student", 1),),
    "age_18_24": (("student", 6), ("single_adult", 3), ("couple_no_children", 1)),
    "age_25_34": (("single_adult", 3), ("couple_no_children", 3), ("parent_young_children", 4)),
    "age_35_44": (("single_adult", 15), ("couple_no_children", 15), ("parent_young_children", 45),
                  ("parent_older_children", 25)),
    "age_45_54": (("single_adult", 15), ("couple_no_children", 20), ("parent_young_children", 5),
                  ("parent_older_children", 60)),
    "age_55_plus": (("couple_no_children", 15), ("parent_older_children", 35), ("retired", 50)),
}
WORKING = (("software_engineer", 14), ("healthcare_worker", 14), ("teacher", 12), ("sales_marketing", 16),
           ("skilled_trades", 14), ("creative", 10), ("finance_business", 14), ("homemaker", 6))
INDUSTRY_GIVEN_OCCUPATION = {
    "student": (("not_working", 1),), "retired": (("not_working", 1),), "homemaker": (("not_working", 1),),
    "software_engineer": (("technology", 1),), "healthcare_worker": (("healthcare", 1),),
    "teacher": (("education", 1),), "skilled_trades": (("manufacturing_construction", 1),),
    "creative": (("media_arts", 1),),
    "sales_marketing": (("retail", 5), ("technology", 2), ("finance", 3)),
    "finance_business": (("finance", 6), ("technology", 2), ("retail", 2)),
}
EDUCATION_GIVEN_OCCUPATION = {
    "student": (("bachelor", 8), ("vocational", 2)),
    "software_engineer": (("bachelor", 6), ("postgraduate", 3), ("vocational", 1)),
    "healthcare_worker": (("bachelor", 4), ("postgraduate", 3), ("vocational", 3)),
    "teacher": (("bachelor", 5), ("postgraduate", 5)),
    "sales_marketing": (("secondary", 3), ("bachelor", 6), ("vocational", 1)),
    "skilled_trades": (("vocational", 7), ("secondary", 3)),
    "creative": (("bachelor", 5), ("secondary", 3), ("vocational", 2)),
    "finance_business": (("bachelor", 6), ("postgraduate", 4)),
    "homemaker": (("secondary", 5), ("vocational", 2), ("bachelor", 3)),
    "retired": (("secondary", 4), ("vocational", 3), ("bachelor", 2), ("postgraduate", 1)),
}

CUES: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "gender": {
        "male": {"topics": ("beard trimming", "men's haircut fade", "men's running shoes", "groomsmen suits"),
                 "says": ("as a guy", "my wife", "my girlfriend", "as a dad"),
                 "bio": ("he/him", "just a guy who loves hiking", "husband and dad", "Soy un chico de Madrid")},
        "female": {"topics": ("makeup tutorial", "pregnancy week by week", "women's running shoes", "bridesmaid dresses"),
                   "says": ("as a woman", "my husband", "my boyfriend", "as a mom"),
                   "bio": ("she/her", "just a girl who loves hiking", "wife and mom", "Ich bin eine Frau aus Berlin")},
    },
    "age_group": {
        "under_18": {"topics": ("homework help algebra", "high school prom", "minecraft for kids", "learner's permit test"),
                     "says": ("my mom won't let me", "I'm in 9th grade", "after school today", "my teacher gave us"),
                     "bio": ("15 y/o", "class of 2029", "16 years old")},
        "age_18_24": {"topics": ("dorm room tour", "first apartment on a budget", "college party", "entry level jobs"),
                      "says": ("I'm 20", "just turned 21", "in my freshman year", "at my first job out of college"),
                      "bio": ("21 y/o", "20 years old", "gen z")},
        "age_25_34": {"topics": ("buying a first home", "late twenties career change", "wedding planning", "30th birthday ideas"),
                      "says": ("I'm 28", "just turned 30", "in my late twenties", "we just bought our first place"),
                      "bio": ("29 y/o", "millennial", "early thirties")},
        "age_35_44": {"topics": ("turning 40", "midlife fitness", "school run hacks", "mortgage refinancing"),
                      "says": ("I'm 38", "just turned 40", "in my late thirties", "since I hit 40"),
                      "bio": ("41 y/o", "forty-something", "late thirties")},
        "age_45_54": {"topics": ("perimenopause", "saving for kids' college", "reading glasses", "50th birthday party"),
                      "says": ("I'm 49", "turning 50 next year", "in my late forties", "at my age (52)"),
                      "bio": ("48 y/o", "fifty and fabulous", "gen x")},
        "age_55_plus": {"topics": ("retirement planning", "grandchildren gifts", "medicare explained", "senior travel deals"),
                        "says": ("I'm 63", "my grandkids", "at 67 years young", "since I turned 60"),
                        "bio": ("proud grandma of 3", "65 y/o", "boomer and proud")},
    },
    "life_stage": {
        "student": {"topics": ("exam revision tips", "student discounts", "study with me", "campus life vlog"),
                    "says": ("my exams are next week", "my roommate", "between lectures", "my class schedule"),
                    "bio": ("student", "studying hard", "campus life")},
        "single_adult": {"topics": ("dating apps tips", "solo travel", "cooking for one", "living alone"),
                         "says": ("being single", "my date last night", "living alone", "nobody to cook for but me"),
                         "bio": ("single", "living solo", "independent")},
        "couple_no_children": {"topics": ("couples travel", "date night ideas", "dinks lifestyle", "honeymoon destinations"),
                               "says": ("my partner and I", "no kids yet", "our honeymoon", "me and my fiance"),
                               "bio": ("married, no kids", "partner in crime", "just the two of us")},
        "parent_young_children": {"topics": ("toddler sleep schedule", "baby led weaning", "kindergarten readiness", "stroller reviews"),
                                  "says": ("my toddler", "my 3 year old", "nap time", "the baby finally slept"),
                                  "bio": ("parent of two little ones", "toddler wrangler", "mama of a 2 y/o")},
        "parent_older_children": {"topics": ("teenager screen time", "college applications for parents", "teen driving lessons", "empty nest"),
                                  "says": ("my teenager", "my son's college", "my daughter just got her license", "my kids are grown"),
                                  "bio": ("parent of teens", "mom of two teenagers", "dad of a college kid")},
        "retired": {"topics": ("retirement hobbies", "gardening for retirees", "pension payments", "cruises for seniors"),
                    "says": ("since I retired", "in my retirement", "my pension", "now that I don't work anymore"),
                    "bio": ("retired", "happily retired", "enjoying retirement")},
    },
    "occupation": {
        "student": {"topics": ("student loan tips", "how to write an essay", "exam season", "scholarship applications"),
                    "says": ("my professor", "my thesis", "my homework", "my lecture today"),
                    "bio": ("student at state university", "high school student", "undergrad")},
        "software_engineer": {"topics": ("python tutorial", "system design interview", "kubernetes explained", "leetcode"),
                              "says": ("my code review", "on call this week", "my PR got merged", "debugging in prod"),
                              "bio": ("software engineer", "backend dev", "I write code for a living")},
        "healthcare_worker": {"topics": ("nursing school", "night shift tips", "NCLEX prep", "compression socks for nurses"),
                              "says": ("on my night shift", "my patients", "at the hospital today", "12 hour shift"),
                              "bio": ("RN", "ICU nurse", "pharmacist", "Soy enfermera")},
        "teacher": {"topics": ("classroom management", "lesson plans", "teacher summer break", "grading papers"),
                    "says": ("my students", "my classroom", "grading all weekend", "parent teacher night"),
                    "bio": ("teacher", "5th grade teacher", "high school math teacher")},
        "sales_marketing": {"topics": ("cold calling tips", "marketing funnel", "closing deals", "social media ads"),
                            "says": ("hit my quota", "my clients", "our campaign launch", "my sales target"),
                            "bio": ("sales manager", "marketing lead", "account executive")},
        "skilled_trades": {"topics": ("electrician tools", "plumbing repair", "welding basics", "forklift certification"),
                           "says": ("on the job site", "my apprentice", "wiring a house today", "my toolbox"),
                           "bio": ("electrician", "plumber", "master carpenter")},
        "creative": {"topics": ("graphic design portfolio", "photoshop tutorial", "music production", "drawing tutorial"),
                     "says": ("my latest commission", "my client's logo", "my gallery show", "my band's gig"),
                     "bio": ("graphic designer", "illustrator", "photographer")},
        "finance_business": {"topics": ("excel pivot tables", "cpa exam", "quarterly reports", "investment banking"),
                             "says": ("closing the books", "my audit", "board meeting today", "month end close"),
                             "bio": ("accountant", "financial analyst", "operations manager")},
        "homemaker": {"topics": ("meal prep for families", "cleaning hacks", "budget grocery haul", "homeschool ideas"),
                      "says": ("as a stay at home mom", "running the household", "stay at home dad life", "my daily chores"),
                      "bio": ("stay at home parent", "homemaker", "full time mom")},
        "retired": {"topics": ("golf for seniors", "retirement travel", "volunteering after retirement", "social security"),
                    "says": ("since I retired", "after 40 years at work", "my pension", "retired life"),
                    "bio": ("retired", "retired engineer", "retired nurse")},
    },
    "industry": {
        "technology": {"topics": ("tech layoffs", "startup funding", "AI news", "saas metrics"),
                       "says": ("at my tech company", "our startup", "our product launch", "in big tech"),
                       "bio": ("works in tech", "startup life", "tech industry")},
        "healthcare": {"topics": ("hospital staffing", "healthcare policy", "medical conferences", "patient care"),
                       "says": ("at our clinic", "on the ward", "in the hospital", "our care home"),
                       "bio": ("healthcare", "hospital staff", "clinic")},
        "education": {"topics": ("education policy", "school budget cuts", "teacher strikes", "curriculum design"),
                      "says": ("at our school", "our district", "the school board", "our university department"),
                      "bio": ("education", "school staff", "educator")},
        "finance": {"topics": ("stock market today", "banking regulation", "insurance claims", "interest rates"),
                    "says": ("at the bank", "our trading desk", "in insurance", "our fund"),
                    "bio": ("finance", "banker", "insurance")},
        "retail": {"topics": ("retail worker stories", "black friday shifts", "ecommerce trends", "store manager tips"),
                   "says": ("at the store", "our shop", "black friday at work", "our customers"),
                   "bio": ("retail", "store manager", "ecommerce")},
        "manufacturing_construction": {"topics": ("construction site safety", "factory tour", "heavy machinery", "building codes"),
                                       "says": ("at the plant", "on site", "our factory line", "the construction crew"),
                                       "bio": ("construction", "factory", "builder")},
        "media_arts": {"topics": ("film festival", "publishing industry", "art gallery openings", "streaming industry"),
                       "says": ("at the studio", "our newsroom", "our agency", "the production"),
                       "bio": ("media", "creative industry", "film crew")},
        "not_working": {"topics": ("free things to do", "budget living", "daytime tv", "hobbies at home"),
                        "says": ("not working right now", "no job to go to", "home all day", "free all week"),
                        "bio": ("not working", "free time", "home life")},
    },
    "education": {
        "secondary": {"topics": ("ged prep", "high school diploma", "jobs without a degree", "school leavers"),
                      "says": ("never went to college", "finished high school", "no degree", "left school at 17"),
                      "bio": ("high school grad", "school of life", "no degree")},
        "vocational": {"topics": ("trade school", "apprenticeship program", "vocational certificate", "community college courses"),
                       "says": ("my apprenticeship", "trade school", "my certificate course", "my vocational training"),
                       "bio": ("trade school grad", "certified", "apprentice")},
        "bachelor": {"topics": ("bachelor's degree", "college graduation", "undergraduate life", "alumni network"),
                     "says": ("my bachelor's", "when I graduated college", "my college degree", "my undergrad"),
                     "bio": ("BA", "BSc", "college grad")},
        "postgraduate": {"topics": ("phd life", "master's thesis", "grad school", "postdoc jobs"),
                         "says": ("my PhD", "my master's", "grad school", "my dissertation"),
                         "bio": ("PhD", "MSc", "MBA")},
    },
}

TITLE_FORMS = ("{t} - full guide", "Top 10 {t} tips", "{t} vlog", "Why nobody talks about {t}",
               "{t} in 5 minutes", "My honest take on {t}", "{t}: what I wish I knew")
QUERY_FORMS = ("{t}", "best {t} 2026", "{t} near me", "how to {t}", "{t} reddit", "{t} cost")
COMMENT_FORMS = ("{s}, this is so true", "{s} and I needed this", "Saving this, {s}", "lol {s}",
                 "{s}. Great video!", "Can relate, {s}")
BIO_FORMS = ("{b} | coffee first", "{b}. Opinions my own.", "{b} ✨", "{b} - {b2}", "{b}")

NOISE_TITLES = ("Funny cat compilation", "Epic fails 2026", "Satisfying slime video", "World cup highlights",
                "Weather update", "Unboxing the new phone", "Street food tour", "Relaxing rain sounds",
                "Movie trailer reaction", "Daily news recap", "Guitar cover of a pop song", "Lofi beats to relax")
NOISE_QUERIES = ("weather tomorrow", "pizza near me", "translate hello", "movie times", "lottery results",
                 "how tall is mount everest", "funny memes", "football scores", "cheap flights")
NOISE_COMMENTS = ("first!", "lol", "who's watching in 2026?", "this made my day", "wow", "so cute",
                  "great video", "underrated", "😂😂😂", "nice")
NOISE_ACCOUNTS = ("daily_memes", "news_now", "cute_animals", "sports_center", "food_lovers", "travel_pics")
TAGS = ("fun", "howto", "vlog", "news", "music", "life", "tips", "review", "family", "work", "money", "study")
# Text in other languages: noise and some explicit cues (the bios above also carry a few).
MULTILINGUAL = ("¡Qué video tan bueno!", "Das ist wirklich lustig", "这个视频太好笑了", "C'est génial, merci",
                "動画ありがとう", "Ótimo conteúdo", "Отличное видео", "정말 재미있어요")
EMOJI = ("😂", "🔥", "❤️", "👍", "🙏", "✨", "😭", "🎉")
NICKNAMES = ("sunny", "pixel", "nomad", "maple", "river", "echo", "blaze", "luna", "atlas", "willow")
