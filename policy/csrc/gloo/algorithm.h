// See names.h: gloo's headers are not in the torch wheel; c10d needs only the names.
#pragma once
#include "names.h"
